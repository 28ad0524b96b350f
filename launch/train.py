"""``tether train``: fit a policy on a dataset (CPU or GPU).

::

    tether train DATASET --out runs/beso                      # BESO (goal-conditioned diffusion)
    tether train DATASET --algo gcbc                          # GCBC baseline, BESO's network
    tether train DATASET --obs.cameras corner --obs.state-dims 0 1 2 3   # from pixels + proprioception
    tether train DATASET --obs.cameras corner --goal.kind language       # CLIP language goals
    tether train DATASET --obs.cameras corner --goal.kind multimodal     # image or language goals (MDT)
    tether train PLAY --goal.kind hindsight --beso.action-horizon 4   # play data, chunks
    tether train DATASET --algo iql --reward reward.vlm       # IQL on a relabelled reward
    tether train DATASET --algo iql --reward next.reward      # IQL on the recorded reward
    tether train DATASET --algo bc                            # BC, the baseline, same network
    tether train DATASET --algo calql --reward next.reward    # Cal-QL, to fine-tune online later
    tether train PLAY --algo gciql                            # goal-conditioned IQL (OGBench) on play data

BESO and GCBC write ``policy.pt`` (``tether export`` makes the ONNX file). IQL, BC and Cal-QL (see
``tether.policies.offline``) write ``policy.pt`` and ``policy.onnx`` at once, parity-checked, ready
for ``tether eval policy.onnx --robot ADDRESS``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import tyro

from tether.policies.configs import BesoConfig, CalQlConfig, GciqlConfig, GoalConfig, IqlConfig, ObservationConfig, TrainConfig


@dataclass
class TrainCommand:
    """Train a policy on a dataset: BESO (default), IQL or Cal-QL (offline RL) or BC."""

    dataset: tyro.conf.Positional[Path]
    """A tether / LeRobotDataset v3.0 folder with observation.state and action."""
    out: Path = Path("runs/train")
    """Output folder: config.json, checkpoints/ (last.pt to --resume from; BESO/GCBC also write
    policy.pt there, the EMA policy as of that checkpoint, to export while training goes on),
    policy.pt, learning_curve.png."""
    algo: Literal["beso", "gcbc", "iql", "bc", "calql", "gciql"] = "beso"
    """beso: goal-conditioned diffusion (Reuss et al. 2023); gcbc: goal-conditioned behaviour
    cloning on BESO's network; iql: implicit Q-learning (Kostrikov et al. 2022); bc: behaviour
    cloning with IQL's actor network; calql: calibrated CQL on SAC (Nakamoto et al. 2023), the
    pre-training for tether finetune; gciql: goal-conditioned IQL on play data with hindsight goals
    (OGBench's reference, Park et al. 2025), conditioned on the robot's observation.goal."""
    reward: str | None = None
    """iql, calql: reward column, next.reward, reward.NAME (tether reward-model --relabel) or
    constant; shorthand for --iql.reward."""
    beso: BesoConfig = field(default_factory=BesoConfig)
    """BESO's settings; GCBC uses its network settings (window, action horizon, size)."""
    goal: GoalConfig = field(default_factory=GoalConfig)
    """BESO/GCBC goals: task one-hot, hindsight (a later state of the episode: play data),
    language (CLIP text of the task), image (the episode's last frame) or multimodal (either, MDT)."""
    obs: ObservationConfig = field(default_factory=ObservationConfig)
    """BESO/GCBC inputs: which state elements, which cameras and their image encoder."""
    iql: IqlConfig = field(default_factory=IqlConfig)
    """IQL and BC settings (BC uses the actor's: hidden, actor, encoder, camera, channels); Cal-QL
    reads its data settings here (reward, reward-normalization, reward-shift, terminal)."""
    calql: CalQlConfig = field(default_factory=CalQlConfig)
    """Cal-QL settings (CQL weight, sampled actions, the SAC underneath)."""
    gciql: GciqlConfig = field(default_factory=GciqlConfig)
    """GCIQL settings (expectile, alpha, actor loss, goal mixtures; OGBench's defaults)."""
    optim: TrainConfig = field(default_factory=TrainConfig)
    resume: bool = False
    """Continue from out/checkpoints/last.pt (saved every --optim.checkpoint-every steps), drawing
    the batches and noise a run never stopped would have drawn."""
    cache_dir: Path | None = None
    """Decoded-video cache folder for image inputs (default: $TETHER_CACHE_DIR or ~/.cache/tether/videos)."""


def train_beso(cmd: TrainCommand, on_step: Callable[[int, float], None] | None = None):
    """Train BESO or GCBC (``cmd.algo``) as ``cmd`` says; returns (policy.pt path, TrainResult,
    number of frames).

    Raises:
        tether.robot.dataset.DatasetError: the dataset cannot be read, or has no robot spec
            (tether needs one to export).
        ValueError: bad goal or state dims, an image goal without a camera.
    """
    import torch

    from tether.policies.checkpoint import KINDS, save_policy
    from tether.policies.sequence_data import SequenceData
    from tether.policies.train import distributed_rank, train
    from tether.robot.dataset import Dataset, DatasetError

    torch.manual_seed(cmd.optim.seed)
    spec = Dataset(cmd.dataset).spec
    if spec is None:
        raise DatasetError(f"{cmd.dataset} carries no tether robot spec in meta/info.json: a "
                           "policy needs one to be checked against a robot (record with tether)")
    from tether.launch import UsageError

    try:  # bad settings: one line naming the setting, before any training step
        data = SequenceData.from_dataset(cmd.dataset, cmd.beso.window, cmd.beso.action_horizon, cmd.goal,
                                         cmd.obs, cmd.cache_dir)
        if visuomotor(cmd):
            from tether.policies.visuomotor import VisuomotorPolicy

            embeddings = None if data.task_embeddings is None else torch.from_numpy(data.task_embeddings)
            model = VisuomotorPolicy(cmd.algo, cmd.beso, cmd.obs, data.obs_dim, data.action_dim, data.goal_dim,
                                     data.camera_shapes, data.goal_camera, embeddings,
                                     cmd.goal.image_goal_prob)
        else:
            model = KINDS[cmd.algo](cmd.beso, data.obs_dim, data.action_dim, data.goal_dim)
    except (ValueError, ImportError) as e:
        if isinstance(e, DatasetError):
            raise
        raise UsageError(str(e)) from None
    data.data.warm()  # decode every camera episode once, before the first step
    cmd.out.mkdir(parents=True, exist_ok=True)
    (cmd.out / "config.json").write_text(json.dumps(asdict(cmd), indent=2, default=str))

    def save(path, ema) -> None:
        save_policy(path, ema, data.normalizer, data.tasks, spec, data.goal_dims)

    result = train(
        model,
        data.batches(cmd.optim.batch_size, cmd.optim.seed),
        cmd.optim,
        cmd.out,
        on_step=on_step,
        resume=cmd.resume,
        # a long run can be exported and evaluated while it trains: tether export checkpoints/policy.pt
        on_checkpoint=lambda step, ema: save(cmd.out / "checkpoints" / "policy.pt", ema),
    )
    path = cmd.out / "policy.pt"
    if distributed_rank()[0] == 0:  # under torchrun, one process writes
        save(path, result.ema)
    return path, result, len(data.data)


def visuomotor(cmd: TrainCommand) -> bool:
    """BESO/GCBC through an observation encoder: cameras, a state selection, or goals that need
    one (language, image, multimodal)."""
    return bool(cmd.obs.cameras) or cmd.obs.state_dims is not None or cmd.goal.kind in ("language", "image", "multimodal")


def train_offline_rl(cmd: TrainCommand, on_step: Callable[[int, float], None] | None = None):
    """Train IQL, BC or Cal-QL as ``cmd`` says; returns ``tether.policies.offline.OfflineRun``.

    Raises:
        tether.robot.dataset.DatasetError: unreadable dataset, unknown reward column or camera.
        ValueError: no robot spec, or the ONNX parity check fails.
    """
    import dataclasses

    from tether.policies.offline import train_offline

    cfg = cmd.iql if cmd.reward is None else dataclasses.replace(cmd.iql, reward=cmd.reward)
    cmd.out.mkdir(parents=True, exist_ok=True)
    config = {**asdict(cmd), "iql": asdict(cfg)}
    (cmd.out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    return train_offline(cmd.dataset, cmd.algo, cfg, cmd.optim, cmd.out, on_step=on_step,
                         resume=cmd.resume, cache_dir=cmd.cache_dir, calql=cmd.calql)


def train_gciql_command(cmd: TrainCommand, on_step: Callable[[int, float], None] | None = None) -> dict:
    """Train GCIQL as ``cmd`` says (``tether.policies.gciql.train_gciql``); returns its report.

    Raises:
        tether.launch.UsageError: bad GCIQL settings or a dataset without transitions (one line).
    """
    from tether.launch import UsageError
    from tether.policies.gciql import check_ratios, train_gciql

    try:
        check_ratios(cmd.gciql)
    except ValueError as e:
        raise UsageError(f"--gciql: {e}") from None
    cmd.out.mkdir(parents=True, exist_ok=True)
    (cmd.out / "config.json").write_text(json.dumps(asdict(cmd), indent=2, default=str))
    try:
        return train_gciql(cmd.dataset, cmd.gciql, cmd.optim, cmd.out, on_step=on_step, resume=cmd.resume)
    except ValueError as e:
        raise UsageError(str(e)) from None


def check_device(cfg: TrainConfig) -> str:
    """The device ``--optim.device`` resolves to (e.g. ``cpu``, ``cuda:0``), checked before any data
    is read.

    Raises:
        tether.launch.UsageError: the device is unknown or unusable here (see
            ``tether.policies.train.resolve_device``).
    """
    from tether.launch import UsageError
    from tether.policies.train import resolve_device

    try:
        return str(resolve_device(cfg.device))
    except ValueError as e:
        raise UsageError(f"--optim.device: {e}") from None


def main(cmd: TrainCommand) -> None:
    """Entry point of ``tether train``: train the chosen algorithm on a dataset."""
    from tether.launch.progress import training_progress

    if cmd.algo not in ("iql", "calql") and cmd.reward is not None:
        from tether.launch import UsageError

        raise UsageError(f"--reward is for --algo iql or calql (--algo {cmd.algo} imitates and reads no reward)")
    device = check_device(cmd.optim)
    from tether.policies.train import distributed_rank
    from tether.robot.dataset.check import require_intact

    require_intact(cmd.dataset, doing="train on")  # a damaged file: one line now, not mid-run

    rank, world = distributed_rank()
    with training_progress(cmd.algo, cmd.optim.steps, disable=rank != 0) as on_step:
        if cmd.algo in ("beso", "gcbc"):
            path, result, frames = train_beso(cmd, on_step)
        elif cmd.algo == "gciql":
            report = train_gciql_command(cmd, on_step)
        else:
            run = train_offline_rl(cmd, on_step)
    if rank != 0:
        return
    if cmd.algo == "gciql":
        print(f"gciql on {report['transitions']} transitions in {report['seconds']:.0f} s on {device} -> "
              f"{cmd.out / 'policy.pt'}, {cmd.out / 'policy.onnx'} (max |onnx - torch| = {report['parity']:.1e})")
        return
    if cmd.algo in ("beso", "gcbc"):
        print(f"trained on {frames} frames in {result.seconds:.0f} s on {world} process(es), {device} -> {path}")
        return
    reward = run.report["reward"]["column"] if cmd.algo != "bc" else "none (BC)"
    print(f"{cmd.algo} on {run.transitions} transitions (reward {reward}) in {run.result.seconds:.0f} s on {device} -> "
          f"{run.checkpoint}, {run.onnx} (max |onnx - torch| = {run.parity:.1e})")
