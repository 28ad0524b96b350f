"""The recorder: subscribes to a robot server's state stream and writes finished episodes.

Each state message carries the observation after a tick and the action applied during that tick,
so frame t of an episode pairs the observation of step t with the action published at step t + 1
(the action taken from that observation), plus the reward, success and done flags that action led
to (``next.*``, as in LeRobot). An episode is written only once it is done and complete: a gap in
the step sequence (lost messages) or a reset before the end drops it with a warning, so a dataset
never holds a silently damaged episode.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from tether.robot.client import RobotClient, RobotLinkError
from tether.robot.dataset import DatasetWriter

log = logging.getLogger(__name__)


@dataclass
class RecorderStats:
    """Episodes written and dropped (with the reason logged), frames written, stream gaps."""

    episodes_written: int = 0
    episodes_dropped: int = 0
    frames_written: int = 0
    gaps: int = 0


@dataclass
class _Episode:
    episode: int
    task: str | None
    last_step: int
    pending: dict[str, np.ndarray]
    columns: dict[str, list] = field(default_factory=dict)

    def add(self, key: str, value) -> None:
        self.columns.setdefault(key, []).append(value)


class EpisodeAssembler:
    """Turns the state stream of a robot server into complete episodes.

    ``handle(state)`` returns ``(frames, task)`` when a state finishes an episode, else None;
    ``frames`` maps each observation key, ``action`` and ``next.reward``/``next.success``/
    ``next.done`` to an array [length, ...].
    """

    def __init__(self) -> None:
        self.stats = RecorderStats()
        self._current: _Episode | None = None

    def handle(self, state: dict) -> tuple[dict[str, np.ndarray], str | None] | None:
        """Feed one state message; returns (frames, task) when it completes an episode."""
        ep = self._current
        if ep is None or state["episode"] != ep.episode:
            if ep is not None:
                self._drop(ep, "a new episode started before it finished")
            self._current = None
            if state["step"] != 0 or state["done"]:
                return None  # joined mid-episode, or idle: wait for the next reset
            self._current = _Episode(state["episode"], state["task"], 0, dict(state["observation"]))
            return None
        if state["step"] == ep.last_step:
            return None  # the server idles (episode done, waiting for a reset)
        if state["step"] != ep.last_step + 1 or state["action"] is None:
            self.stats.gaps += 1
            self._current = None
            self._drop(ep, f"gap in the state stream (step {ep.last_step} -> {state['step']})")
            return None
        for key, value in ep.pending.items():
            ep.add(key, value)
        ep.add("action", state["action"])
        ep.add("next.reward", state["reward"])
        ep.add("next.success", state["success"])
        ep.add("next.done", state["done"])
        ep.pending = dict(state["observation"])
        ep.last_step = state["step"]
        if not state["done"]:
            return None
        self._current = None
        return {k: np.stack(v) for k, v in ep.columns.items()}, ep.task

    def _drop(self, ep: _Episode, why: str) -> None:
        self.stats.episodes_dropped += 1
        log.warning("dropped episode %d of the robot server: %s", ep.episode, why)


class Recorder:
    """Record the robot server at ``address`` into ``writer`` (in a background thread).

    Args:
        address: the robot server.
        writer: an open ``DatasetWriter``; the server must provide every feature of its spec.
        default_task: task string for episodes whose state carries none (hardware).

    Raises:
        tether.robot.spec.SpecMismatchError: the server's spec does not fit the dataset's.
        tether.robot.client.RobotLinkError: the server does not answer.
    """

    def __init__(self, address: str, writer: DatasetWriter, default_task: str = "default"):
        self.writer = writer
        self.default_task = default_task
        self.assembler = EpisodeAssembler()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = RobotClient(address, role="observer", name="recorder")
        spec = self._client.connect()
        spec.check_policy(writer.spec, tasks=())

    @property
    def stats(self) -> RecorderStats:
        return self.assembler.stats

    def handle(self, state: dict) -> None:
        """Process one state message; writes the episode it completes, if any."""
        done = self.assembler.handle(state)
        if done is None:
            return
        frames, task = done
        index = self.writer.add_episode(frames, task or self.default_task)
        self.stats.episodes_written += 1
        self.stats.frames_written += len(frames["action"])
        log.info("recorded episode %d (%d frames, task %r)", index, len(frames["action"]), task)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                state = self._client.next_state(timeout_s=0.1)
            except RobotLinkError:
                continue
            self.handle(state)

    def start(self) -> Recorder:
        """Record in a background thread until ``stop()``."""
        self._thread = threading.Thread(target=self._loop, name="recorder", daemon=True)
        self._thread.start()
        return self

    def wait_for(self, episodes: int, timeout_s: float) -> bool:
        """Wait until ``episodes`` episodes were written or dropped; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.stats.episodes_written + self.stats.episodes_dropped < episodes:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self) -> RecorderStats:
        """Stop recording (an unfinished episode is not written) and close the link."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._client.close()
        return self.stats
