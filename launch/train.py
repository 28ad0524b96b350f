"""``tether train``: fit a BESO policy on a dataset (CPU or GPU) and save ``policy.pt``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import tyro

from tether.policies.configs import BesoConfig, TrainConfig


@dataclass
class TrainCommand:
    """Train a goal-conditioned BESO diffusion policy on a dataset."""

    dataset: tyro.conf.Positional[Path]
    """A tether / LeRobotDataset v3.0 folder with observation.state and action."""
    out: Path = Path("runs/train")
    """Output folder: config.json, checkpoints/, policy.pt, learning_curve.png."""
    beso: BesoConfig = field(default_factory=BesoConfig)
    optim: TrainConfig = field(default_factory=TrainConfig)
    resume: bool = False
    """Continue from out/checkpoints/last.pt."""


def train_beso(cmd: TrainCommand, on_step: Callable[[int, float], None] | None = None):
    """Train BESO as ``cmd`` says; returns (policy.pt path, TrainResult, number of frames).

    Raises:
        tether.robot.dataset.DatasetError: the dataset cannot be read.
        ValueError: the dataset has no robot spec (tether needs one to export).
    """
    import torch

    from tether.policies.beso import Beso
    from tether.policies.checkpoint import save_policy
    from tether.policies.data import Normalizer, WindowData
    from tether.policies.train import train
    from tether.robot.dataset import Dataset

    torch.manual_seed(cmd.optim.seed)
    spec = Dataset(cmd.dataset).spec
    if spec is None:
        raise ValueError(f"{cmd.dataset} carries no tether robot spec in meta/info.json")
    data = WindowData.from_dataset(cmd.dataset, cmd.beso.window)
    normalizer = Normalizer.fit(data.obs, data.actions)
    model = Beso(cmd.beso, data.obs.shape[1], data.actions.shape[1], len(data.tasks))
    cmd.out.mkdir(parents=True, exist_ok=True)
    (cmd.out / "config.json").write_text(json.dumps(asdict(cmd), indent=2, default=str))
    result = train(
        model,
        data.batches(normalizer, cmd.optim.batch_size, cmd.optim.seed),
        cmd.optim,
        cmd.out,
        on_step=on_step,
        resume=cmd.resume,
    )
    path = save_policy(cmd.out / "policy.pt", result.ema, normalizer, data.tasks, spec)
    return path, result, len(data.obs)


def main(cmd: TrainCommand) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn())
    with Progress(*columns) as progress:
        bar = progress.add_task("train", total=cmd.optim.steps, loss=float("nan"))
        path, result, frames = train_beso(
            cmd, lambda step, loss: progress.update(bar, completed=step + 1, loss=loss)
        )
    print(f"trained on {frames} frames in {result.seconds:.0f} s -> {path}")
