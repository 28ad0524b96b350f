"""``tether collect``: record demonstrations of MetaWorld's scripted experts through a robot server.

The expert plays the teleoperator: it reads states from, and sends commands to, the robot server
with the same ``RobotClient`` a human device uses, while a ``Recorder`` subscribed to the server
writes the dataset. Episode k of a task starts from seed ``seed + k``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import tyro

from tether.launch import processes
from tether.robot.client import RobotClient
from tether.robot.dataset import DatasetWriter
from tether.robot.recorder import Recorder
from tether.sim.metaworld import DEFAULT_TASKS

log = logging.getLogger(__name__)


@dataclass
class CollectConfig:
    """Record scripted-expert demonstrations from a simulated robot into a dataset."""

    dataset: tyro.conf.Positional[Path]
    """Dataset folder to write (LeRobotDataset v3.0 layout)."""
    tasks: tuple[str, ...] = DEFAULT_TASKS
    """MetaWorld v3 tasks to demonstrate."""
    episodes: int = 20
    """Episodes per task."""
    seed: int = 0
    """Seed of each task's first episode; episode k uses seed + k."""
    cameras: tuple[str, ...] = ("corner",)
    """Simulated cameras to record as video."""
    image_size: int = 64
    """Camera resolution in pixels (square)."""
    max_episode_steps: int = 200
    """Episode length limit in control ticks (MetaWorld's experts need < 150)."""
    resume: bool = False
    """Append to an existing dataset."""
    overwrite: bool = False
    """Replace an existing dataset."""


@dataclass
class CollectResult:
    """Episodes and frames in the dataset, expert successes per task, wall time (s)."""

    episodes: int
    frames: int
    expert_successes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def collect(
    cfg: CollectConfig,
    logs: Path,
    on_episode: Callable[[str, bool], None] | None = None,
) -> CollectResult:
    """Start a robot server, record ``cfg.episodes`` expert episodes per task, stop the server."""
    from tether.sim.metaworld import check_tasks, expert_policy, metaworld_spec

    check_tasks(cfg.tasks)
    t0 = time.perf_counter()
    spec = metaworld_spec(cfg.tasks, cfg.cameras, cfg.image_size)
    writer = DatasetWriter(
        cfg.dataset, spec, spec.control_rate_hz, resume=cfg.resume, overwrite=cfg.overwrite
    )
    address = processes.free_tcp_address()
    server = processes.start(
        ["serve", "--address", address, "--tasks", *cfg.tasks, "--cameras", *cfg.cameras,
         "--image-size", str(cfg.image_size), "--max-episode-steps", str(cfg.max_episode_steps)],
        logs / "serve-collect.log",
    )
    result = CollectResult(0, 0)
    try:
        processes.wait_for_server(address, server)
        recorder = Recorder(address, writer).start()
        with RobotClient(address, name="scripted-expert") as client:
            for task in cfg.tasks:
                expert = expert_policy(task)
                result.expert_successes[task] = 0
                for k in range(cfg.episodes):
                    state = client.reset(task, cfg.seed + k)
                    while not state["done"]:
                        client.send_action(expert(state["observation"]["observation.state"]))
                        state = client.latest_state()
                    result.expert_successes[task] += bool(state["success"])
                    if on_episode is not None:
                        on_episode(task, bool(state["success"]))
        expected = len(cfg.tasks) * cfg.episodes
        recorder.wait_for(expected, timeout_s=30)
        stats = recorder.stop()
        if stats.episodes_dropped or stats.episodes_written < expected:
            log.warning(
                "recorded %d of %d episodes (%d dropped)", stats.episodes_written, expected,
                stats.episodes_dropped,
            )
    finally:
        processes.stop(server)
    result.episodes = len(writer.episodes)
    result.frames = writer.total_frames
    result.seconds = time.perf_counter() - t0
    return result


def main(cfg: CollectConfig) -> None:
    from rich.progress import Progress

    logging.basicConfig(level=logging.WARNING)
    with Progress() as progress:
        bar = progress.add_task("collect", total=len(cfg.tasks) * cfg.episodes)
        result = collect(cfg, cfg.dataset.parent / "logs", lambda *_: progress.advance(bar))
    print(
        f"{result.episodes} episodes, {result.frames} frames in {cfg.dataset} "
        f"({result.seconds:.0f} s); expert successes: {result.expert_successes}"
    )
