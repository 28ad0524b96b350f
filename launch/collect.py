"""``tether collect``: record demonstrations of MetaWorld's scripted experts through a robot server.

The expert plays the teleoperator: it reads states from, and sends commands to, the robot server
with the same ``RobotClient`` a human device uses, while a ``Recorder`` subscribed to the server
writes the dataset. Episode k of a task starts from seed ``seed + k`` (MetaWorld randomizes the
object and goal positions by seed).

``--quality`` makes unlabelled, mixed-quality data for offline RL (as D4RL's and the RL-VLM-F
follow-up's datasets are made): ``expert`` adds Gaussian noise of std ``--expert-noise`` to the
expert's action, ``medium`` of std ``--medium-noise``, ``random`` sends uniform random actions, and
``mix`` draws one of the three per episode with ``--mix`` probabilities (seeded).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import tyro

from tether.launch import UsageError, processes
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
    quality: Literal["expert", "medium", "random", "mix"] = "expert"
    """Data quality: expert, noisy expert (medium), random actions, or a per-episode mix."""
    expert_noise: float = 0.0
    """Std of the Gaussian noise on expert episodes (action units; actions are clipped to limits)."""
    medium_noise: float = 0.6
    """Std of the Gaussian noise on medium episodes."""
    mix: tuple[float, float, float] = (0.3, 0.4, 0.3)
    """Probabilities of expert, medium and random episodes with --quality mix."""


QUALITIES = ("expert", "medium", "random")


def episode_qualities(cfg: CollectConfig, task_index: int) -> list[str]:
    """The quality of each episode of task number ``task_index`` (seeded by ``cfg.seed``)."""
    if cfg.quality != "mix":
        return [cfg.quality] * cfg.episodes
    p = np.asarray(cfg.mix, np.float64)
    if p.shape != (3,) or (p < 0).any() or p.sum() <= 0:
        raise UsageError(f"--mix takes 3 non-negative probabilities (expert medium random), not {cfg.mix}")
    rng = np.random.default_rng([cfg.seed, task_index])
    return [QUALITIES[i] for i in rng.choice(3, size=cfg.episodes, p=p / p.sum())]


def noisy(expert: Callable[[np.ndarray], np.ndarray], quality: str, cfg: CollectConfig,
          rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """The behaviour policy of one episode: state (39,) -> action (4,) in [-1, 1]."""
    if quality == "random":
        return lambda state: rng.uniform(-1, 1, 4).astype(np.float32)
    std = cfg.expert_noise if quality == "expert" else cfg.medium_noise
    if std == 0:
        return expert
    return lambda state: np.clip(expert(state) + rng.normal(0, std, 4), -1, 1).astype(np.float32)


@dataclass
class CollectResult:
    """Episodes and frames in the dataset, successes of the behaviour policy per task, wall time
    (s)."""

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
    qualities = [episode_qualities(cfg, t) for t in range(len(cfg.tasks))]  # bad --mix fails here
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
            for t, task in enumerate(cfg.tasks):
                expert = expert_policy(task)
                result.expert_successes[task] = 0
                for k, quality in enumerate(qualities[t]):
                    act = noisy(expert, quality, cfg, np.random.default_rng([cfg.seed + k, t, 1]))
                    state = client.reset(task, cfg.seed + k)
                    while not state["done"]:
                        client.send_action(act(state["observation"]["observation.state"]))
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
