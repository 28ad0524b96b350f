"""The ``tether`` command line: one verb per module of ``tether.launch``, each a typed dataclass.

Verb modules keep torch and the simulator out of their imports (they load them inside their
functions), so ``tether --help`` is quick and the robot-side verbs run without torch.
"""

from __future__ import annotations

import sys

import tyro

from tether.launch import bench, calibrate, collect, dataset, demo, eval as eval_verb, export, keys, serve, teleop, train
from tether.launch import finetune, launch_verb
from tether.launch import label as label_verb
from tether.launch import pretrain_value as pretrain_value_verb
from tether.launch import reward_model as reward_model_verb
from tether.launch import success_classifier as success_classifier_verb
from tether.launch import train_sim

VERBS = {
    "demo": (demo.DemoCommand, demo.main),
    "serve": (serve.ServeConfig, serve.main),
    "calibrate": (calibrate.CalibrateCommand, calibrate.main),
    "collect": (collect.CollectConfig, collect.main),
    "teleop": (teleop.TeleopCommand, teleop.main),
    "train": (train.TrainCommand, train.main),
    "train-sim": (train_sim.TrainSimCommand, train_sim.main),
    "export": (export.ExportCommand, export.main),
    "eval": (eval_verb.EvalCommand, eval_verb.main),
    "keys": (keys.KeysCommand, keys.main),
    "bench": (bench.BenchCommand, bench.main),
    "dataset": (dataset.DatasetCommand, dataset.main),
    "launch": (launch_verb.LaunchCommand, launch_verb.main),
    "label": (label_verb.LabelCommand, label_verb.main),
    "reward-model": (reward_model_verb.RewardModelCommand, reward_model_verb.main),
    "success-classifier": (success_classifier_verb.SuccessClassifierCommand, success_classifier_verb.main),
    "pretrain-value": (pretrain_value_verb.PretrainValueCommand, pretrain_value_verb.main),
    "finetune": (finetune.FinetuneCommand, finetune.main),
}


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or set-up: printed as one line, exit code 2."""
    from tether.launch import UsageError
    from tether.launch.demo import OutputExistsError
    from tether.perception.labellers import LabelError, VLMError
    from tether.perception.cameras import CameraError
    from tether.perception.success_rewards import RewardSourceError
    from tether.robot.teleop import MappingError, TeleopError
    from tether.robot.client import RobotLinkError
    from tether.robot.drivers.servo_arm import ServoBusError
    from tether.robot.dataset import DatasetError, DatasetExistsError
    from tether.robot.runner import PolicyLoadError
    from tether.robot.security import InsecureBindError
    from tether.robot.spec import SpecError, SpecMismatchError
    from tether.sim.gl import RenderBackendError
    from tether.sim.metaworld import UnknownTaskError

    errors: list[type[BaseException]] = [
        OutputExistsError, RobotLinkError, InsecureBindError, FileExistsError, ServoBusError, DatasetError, DatasetExistsError, PolicyLoadError,
        SpecError, SpecMismatchError, UnknownTaskError, RenderBackendError, FileNotFoundError, UsageError,
        CameraError, TeleopError, MappingError, LabelError, VLMError, RewardSourceError,
    ]
    return tuple(errors)


def _one_line(error: BaseException, verb: str) -> str:
    """The message of a user error on one line; an operating system's bare "[Errno 2] No such
    file or directory: 'PATH'" says what is missing and who needs it."""
    if isinstance(error, OSError) and error.errno is not None and error.filename is not None:
        return (f"{error.filename} {'does not exist' if isinstance(error, FileNotFoundError) else 'cannot be used'} "
                f"({error.strerror}): tether {verb} needs it; check the path")
    return str(error)


def _restore_sigint() -> None:
    """Make SIGINT raise KeyboardInterrupt even when this process inherited it ignored.

    A shell without job control starts background jobs (``cmd &``, ``nohup``) with SIGINT
    ignored, the children inherit that, and Python then installs no handler: Ctrl-C, ``tether
    launch``'s ordered stop and the learner's save-on-stop would never reach such a process.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``tether`` console script."""
    _restore_sigint()
    try:
        from tether.launch.processes import die_with_parent

        die_with_parent()  # a child of another tether process stops when that one dies
    except KeyboardInterrupt:
        sys.exit(130)
    cfg = tyro.extras.subcommand_cli_from_dict(
        {name: cls for name, (cls, _) in VERBS.items()},
        prog="tether",
        description="tether: collect robot data, train policies, export to ONNX, and run them "
        "on robots over ZeroMQ.",
        args=args,
    )
    verb, run = next((name, fn) for name, (cls, fn) in VERBS.items() if isinstance(cfg, cls))
    try:
        run(cfg)
    except _user_errors() as e:
        print(f"tether: error: {_one_line(e, verb)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
