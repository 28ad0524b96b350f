"""``tether dataset info``: what a dataset holds (episodes, frames, fps, features, tasks)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from tether.robot.dataset import Dataset


@dataclass
class DatasetCommand:
    """Inspect a dataset (LeRobotDataset v3.0 layout)."""

    action: tyro.conf.Positional[Literal["info"]]
    dataset: tyro.conf.Positional[Path]
    json: bool = False
    """Print JSON instead of text."""


def info(root: Path) -> dict:
    """Summary of the dataset at ``root``: episodes, frames, fps, features, tasks, lengths.

    Raises:
        tether.robot.dataset.DatasetError: not a readable dataset.
    """
    ds = Dataset(root)
    lengths = [e["length"] for e in ds.episodes]
    return {
        "root": str(root),
        "codebase_version": ds.info["codebase_version"],
        "robot_type": ds.info.get("robot_type"),
        "episodes": len(ds),
        "frames": ds.num_frames,
        "fps": ds.fps,
        "features": {k: {"dtype": f["dtype"], "shape": f["shape"]} for k, f in ds.features.items()},
        "tasks": ds.tasks,
        "episodes_per_task": {t: sum(t in e["tasks"] for e in ds.episodes) for t in ds.tasks},
        "episode_length": {"min": min(lengths, default=0), "max": max(lengths, default=0),
                           "mean": sum(lengths) / max(1, len(lengths))},
    }


def main(cmd: DatasetCommand) -> None:
    summary = info(cmd.dataset)
    if cmd.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{summary['root']}: {summary['episodes']} episodes, {summary['frames']} frames at "
          f"{summary['fps']:g} fps, robot {summary['robot_type']}")
    for task, n in summary["episodes_per_task"].items():
        print(f"  task {task!r}: {n} episodes")
    for key, f in summary["features"].items():
        print(f"  {key}: {f['dtype']} {f['shape']}")
