"""``tether finetune``: online fine-tuning on a robot, an actor and a learner over ZeroMQ.

::

    tether finetune run --robot tcp://ROBOT:5555 --policy runs/calql/policy.pt --algo wsrl --reward sim
    tether finetune run --robot ADDRESS --policy CKPT --algo rlpd --dataset DATA   # 50% offline batches
    tether finetune learner CKPT --address tcp://0.0.0.0:5600 --out runs/ft --algo wsrl   # torch machine
    tether finetune actor --robot tcp://127.0.0.1:5555 --learner tcp://LEARNER:5600 --out runs/ft   # robot
    tether finetune compare runs/wsrl runs/rlpd runs/calql --offline runs/eval_offline   # curves, dip

``run`` starts the actor as a second process (``tether finetune actor``, onnxruntime only) and
runs the learner in this one, with a live line: episodes, success and return (last 10),
intervention rate, UTD, weights version. Outputs under ``--out``: ``weights/vN.onnx``,
``progress.jsonl``, ``episodes.json``, ``finetune.png`` (curves), ``policy.onnx`` (the fine-tuned
mean policy, for ``tether eval``), ``learner.pt`` and ``buffer.npz`` (a restarted learner resumes
from them), ``actor.log``.

Algorithms: WSRL (Zhou et al., ICLR 2025), RLPD (Ball et al., ICML 2023), Cal-QL (Nakamoto et
al., 2023); see ``tether.policies.learner``. Rewards (computed by the actor, see
``tether.perception.success_rewards``): ``sim``, the robot's own; ``classifier``, a success classifier
(``tether success-classifier``) on each new camera frame, success ending the episode; ``vlm``, an
OpenAI-compatible VLM's yes/no verdict on each episode's final frame. Interventions:
``--intervene keyboard|spacemouse|gamepad|leader`` lets an operator take over at any time (the
keyboard's ``t`` toggles, the others hold a button); those steps are flagged, penalized with
``--online.intervention-penalty`` and kept as demos with ``--online.intervention-demos``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Annotated, Literal, Union

import tyro

from tether.launch import UsageError
from tether.perception.labellers.vlm import VLMConfig
from tether.policies.configs import OnlineConfig
from tether.robot.teleop import TeleopConfig

Algo = Literal["wsrl", "rlpd", "calql"]
Reward = Literal["sim", "classifier", "vlm"]
Device = Literal["none", "keyboard", "spacemouse", "gamepad", "leader"]


@dataclass
class _LearnerArgs:
    algo: Algo = "wsrl"
    """wsrl: warm-up then SAC on online data only; rlpd: SAC on 50% offline batches; calql: Cal-QL
    continued online (shorthand for --online.algo)."""
    reward: Reward = "sim"
    """sim: the robot's own reward; classifier: a success classifier on each new frame (--classifier);
    vlm: a VLM's verdict on each episode's final frame (--vlm.*; OPENAI_API_KEY, TETHER_VLM_MODEL)."""
    dataset: Path | None = None
    """Offline dataset for rlpd and calql (their offline half of each batch)."""
    online: OnlineConfig = field(default_factory=OnlineConfig)
    threads: int = 1
    """torch threads of the learner (the actor keeps a core)."""


@dataclass
class _ActorArgs:
    eval_every: int = 0
    """After every this many training episodes, one evaluation episode with the policy's mean action
    (not trained on; finetune compare then draws and scores those). 0: none."""
    classifier: Path | None = None
    """--reward classifier: classifier.onnx from tether success-classifier."""
    threshold: float | None = None
    """--reward classifier: success when P >= threshold (default: the classifier's)."""
    vlm_camera: str | None = None
    """--reward vlm: camera shown to the VLM (default: the robot's first)."""
    vlm: VLMConfig = field(default_factory=VLMConfig)
    intervene: Device = "none"
    """A teleop device the operator can take over with (none: no interventions)."""
    teleop: TeleopConfig = field(default_factory=TeleopConfig)


@dataclass
class Run(_ActorArgs, _LearnerArgs):
    """The actor (a second process) and the learner (this one) on a robot server."""

    robot: str = "tcp://127.0.0.1:5555"
    """Address of the robot server (tether serve)."""
    policy: Path = Path("runs/train/policy.pt")
    """The Cal-QL checkpoint to start from (tether train --algo calql)."""
    out: Path = Path("runs/finetune")
    learner: str | None = None
    """Where the learner binds; default a free loopback port."""
    episodes: int | None = None
    """Episodes the actor runs (default: 100, or as many as --steps takes)."""
    steps: int | None = None
    """Online transitions to collect; the actor stops at the end of the episode that reaches them."""
    task: str | None = None
    seed: int = 0
    swap_every_steps: int = 0
    """Also swap weights inside an episode every this many steps (0: at episode ends only)."""


@dataclass
class LearnerCommand(_LearnerArgs):
    """The learner alone (torch): trains on what actors send, publishes ONNX weights."""

    checkpoint: tyro.conf.Positional[Path] = Path("runs/train/policy.pt")
    """The Cal-QL checkpoint to start from."""
    address: str = "tcp://127.0.0.1:5600"
    """Where to bind (actors connect)."""
    out: Path = Path("runs/finetune")
    updates: int | None = None
    """Stop after this many gradient updates (default: until Ctrl-C)."""
    duration_s: float | None = None


@dataclass
class ActorCommand(_ActorArgs):
    """The actor alone (no torch): runs the policy on the robot, streams transitions."""

    robot: str = "tcp://127.0.0.1:5555"
    learner: str = "tcp://127.0.0.1:5600"
    out: Path = Path("runs/finetune")
    policy: Path | None = None
    """Initial ONNX policy (version 0); default: wait for the learner's weights."""
    episodes: int | None = None
    """Episodes to run (default: until Ctrl-C or --steps)."""
    steps: int | None = None
    """Transitions to collect; stops at the end of the episode that reaches them."""
    task: str | None = None
    seed: int = 0
    exploration_std: float = 0.0
    """Gaussian noise for a deterministic policy (fraction of the action half range)."""
    swap_every_steps: int = 0
    wait_s: float = 120.0
    """How long to wait for the learner's first weights (without --policy)."""
    client_key: Path | None = None
    """This client's secret key (.key_secret), for a server with CurveZMQ keys."""
    server_public_key: Path | None = None
    reward: Reward = "sim"
    """sim: the robot's own; classifier or vlm: computed here (see tether finetune run --help)."""


@dataclass
class CompareCommand:
    """Fine-tuning runs side by side: success curves, initial dip, steps to a success rate."""

    runs: tyro.conf.Positional[list[Path]]
    """Run folders (their episodes.json)."""
    out: Path = Path("runs/finetune-compare")
    offline: Path | None = None
    """The offline policy's tether eval folder (eval.json), drawn as a flat line."""
    window: int = 10
    """Episodes in the moving average of success."""
    dip_steps: float = 10_000
    """The initial dip is the lowest success in this many first online steps."""
    target: float = 0.8
    """Success rate whose first crossing is reported (steps to target)."""


FinetuneVerb = Union[
    Annotated[Run, tyro.conf.subcommand("run")],
    Annotated[CompareCommand, tyro.conf.subcommand("compare")],
    Annotated[LearnerCommand, tyro.conf.subcommand("learner")],
    Annotated[ActorCommand, tyro.conf.subcommand("actor")],
]


@dataclass
class FinetuneCommand:
    """Online fine-tuning: WSRL, RLPD or Cal-QL, an actor on the robot and a torch learner."""

    verb: tyro.conf.OmitSubcommandPrefixes[FinetuneVerb]


def _check(args: _LearnerArgs, checkpoint: Path) -> OnlineConfig:
    if not checkpoint.exists():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    return replace(args.online, algo=args.algo)


def _line(p) -> str:
    evaluation = "" if math.isnan(p.eval_success) else f" | eval success {p.eval_success:.2f}"
    return (f"{p.phase} | episodes {p.episodes} | success {p.success:.2f}{evaluation} | return {p.ret:.2f} | "
            f"interventions {p.intervention_rate:.2f} | UTD {p.utd:.2f} | updates {p.updates} | v{p.version}")


def _learn(args: _LearnerArgs, checkpoint: Path, address: str, out: Path, stop, max_updates=None, duration_s=None):
    import torch

    from tether.policies.learner import Learner
    from rich.live import Live

    torch.set_num_threads(args.threads)
    cfg = _check(args, checkpoint)
    learner = Learner(checkpoint, cfg, address, out, dataset=args.dataset, reward=args.reward)
    with Live("starting the learner", refresh_per_second=4, transient=False) as live:
        progress = learner.run(stop, max_updates, duration_s, on_progress=lambda p: live.update(_line(p)))
    return learner, progress


def _changed_flags(value, default, prefix: str = "") -> list[str]:
    """Command-line flags (tyro's spelling) of the fields of dataclass ``value`` that differ from
    ``default``, nested dataclasses as ``--outer.inner``: what passes a ``Run``'s actor settings
    on to the actor process."""
    out: list[str] = []
    for f in fields(value):
        v, d = getattr(value, f.name), getattr(default, f.name)
        name = prefix + f.name.replace("_", "-")
        if is_dataclass(v):
            out += _changed_flags(v, d, name + ".")
        elif v != d:
            if isinstance(v, bool):
                out.append(f"--{name}" if v else f"--{prefix}no-{f.name.replace('_', '-')}")
            elif isinstance(v, (tuple, list)):
                out += [f"--{name}", *map(str, v)]
            else:
                out += [f"--{name}", "None" if v is None else str(v)]
    return out


def run_both(cmd: Run) -> dict:
    """``tether finetune run``: returns the last progress as a dict."""
    from dataclasses import asdict

    from tether.launch.processes import free_tcp_address, start, stop as stop_process

    for flag, value in (("--episodes", cmd.episodes), ("--steps", cmd.steps)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be >= 1")
    if cmd.eval_every < 0:
        raise UsageError("--eval-every must be >= 0")
    episodes = cmd.episodes if cmd.episodes is not None or cmd.steps is not None else 100
    budget = (["--episodes", str(episodes)] if episodes else []) + (["--steps", str(cmd.steps)] if cmd.steps else [])
    _check(cmd, cmd.policy)
    _check_reward(cmd)
    address = cmd.learner or free_tcp_address()
    cmd.out.mkdir(parents=True, exist_ok=True)
    args = ["finetune", "actor", "--robot", cmd.robot, "--learner", address, "--out", str(cmd.out),
            *budget, "--seed", str(cmd.seed), "--swap-every-steps", str(cmd.swap_every_steps)]
    if cmd.task:
        args += ["--task", cmd.task]
    actor_args = _ActorArgs(**{f.name: getattr(cmd, f.name) for f in fields(_ActorArgs)})
    if cmd.vlm.api_key:  # through the environment: a command line is visible to every user
        os.environ["OPENAI_API_KEY"] = cmd.vlm.api_key
        actor_args.vlm = replace(cmd.vlm, api_key=None)
    args += _changed_flags(actor_args, _ActorArgs())
    args += ["--reward", cmd.reward]
    actor = start(args, cmd.out / "actor.log")
    done = threading.Event()

    def watch():
        actor.wait()
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        learner, progress = _learn(cmd, cmd.policy, address, cmd.out, done)
    finally:
        stop_process(actor)
    if actor.returncode not in (0, None):
        tail = (cmd.out / "actor.log").read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"the actor exited with code {actor.returncode}: {tail[0]}")
    return asdict(progress)


def _check_reward(cmd: ActorCommand | Run) -> None:
    """Reward settings that cannot work, found before any process starts.

    Raises:
        UsageError: --reward classifier without --classifier, or --classifier/--threshold without it.
        FileNotFoundError: no classifier file. VLMError: --reward vlm without a model name.
    """
    if cmd.reward != "classifier" and (cmd.classifier is not None or cmd.threshold is not None):
        raise UsageError("--classifier and --threshold go with --reward classifier")
    if cmd.reward == "classifier":
        if cmd.classifier is None:
            raise UsageError("--reward classifier needs --classifier CLASSIFIER.onnx (tether success-classifier)")
        if not cmd.classifier.exists():
            raise FileNotFoundError(f"no classifier at {cmd.classifier} (write one with tether success-classifier)")
    if cmd.reward == "vlm":
        cmd.vlm.resolved()


def _reward_source(cmd: ActorCommand):
    """The actor's reward source for ``--reward`` (None: the robot's own); raises as
    :func:`_check_reward`."""
    _check_reward(cmd)
    if cmd.reward == "classifier":
        from tether.perception.success_rewards import ClassifierReward

        return ClassifierReward(cmd.classifier, cmd.threshold)
    if cmd.reward == "vlm":
        from tether.perception.success_rewards import VlmSuccessReward

        return VlmSuccessReward(cmd.vlm_camera, cmd.vlm)
    return None


def run_actor(cmd: ActorCommand) -> None:
    """``tether finetune actor``: the actor with its reward source and intervention device, until
    its episodes are done or Ctrl-C; prints a line per episode and a summary."""
    from tether.robot.actor import Actor

    keys = None
    if cmd.client_key is not None:
        from tether.robot.security import ClientKeys

        if cmd.server_public_key is None:
            raise UsageError("--client-key needs --server-public-key")
        keys = ClientKeys(cmd.client_key, cmd.server_public_key)
    reward = _reward_source(cmd)
    intervene = None
    if cmd.intervene != "none":
        from tether.robot.teleop.intervention import TeleopIntervention

        intervene = TeleopIntervention(cmd.intervene, cmd.teleop)
    actor = Actor(cmd.robot, cmd.learner, cmd.out, cmd.policy, cmd.task, cmd.seed, cmd.exploration_std,
                  cmd.swap_every_steps, robot_keys=keys, reward=reward, intervene=intervene,
                  eval_every=cmd.eval_every)
    stop = threading.Event()
    t0 = time.monotonic()

    def report(end: dict) -> None:
        print(f"episode {len(actor.stats.episodes)}: success {end['success']}, return {end['return']:.2f}, "
              f"{end['length']} steps, weights v{end['version']} ({time.monotonic() - t0:.0f} s)", flush=True)

    try:
        stats = actor.run(cmd.episodes, cmd.steps, stop=stop, wait_s=cmd.wait_s, on_episode=report)
    except KeyboardInterrupt:
        stop.set()
        stats = actor.stats
    finally:
        actor.close()
        for part in (reward, intervene):
            if part is not None:
                part.close()
    print(f"actor: {len(stats.episodes)} episodes, {stats.steps} steps, {stats.swaps} weight swaps, "
          f"{stats.messages_dropped} messages dropped, {len(stats.refused)} weights refused", flush=True)


def main(cmd: FinetuneCommand) -> None:
    """Entry point of ``tether finetune``: dispatch to run, learner, actor or compare."""
    verb = cmd.verb
    if isinstance(verb, CompareCommand):
        from tether.launch.finetune_compare import compare

        compare(verb.runs, verb.out, verb.offline, verb.window, verb.dip_steps, verb.target)
        print((verb.out / "compare.md").read_text(), end="")
        print(f"wrote {verb.out}/compare.json, compare.md, compare.png")
    elif isinstance(verb, ActorCommand):
        run_actor(verb)
    elif isinstance(verb, LearnerCommand):
        stop = threading.Event()
        try:
            _learn(verb, verb.checkpoint, verb.address, verb.out, stop, verb.updates, verb.duration_s)
        except KeyboardInterrupt:
            stop.set()
    else:
        p = run_both(verb)
        print(f"\nfine-tuned ({verb.algo}): {p['episodes']} episodes, success {p['success']:.2f} (last 10), "
              f"{p['updates']} updates, weights v{p['version']} -> {verb.out / 'policy.onnx'}, "
              f"{verb.out / 'finetune.png'}")
