"""The recorder: subscribes to a robot server's state stream (and to cameras) and writes episodes.

Each state message carries the observation after a tick and the action applied during that tick,
so frame t of an episode pairs the observation of step t with the action published at step t + 1
(the action taken from that observation), plus the reward, success and done flags that action led
to (``next.*``, as in LeRobot). Cameras attached to the recorder (rather than rendered by the
server) add ``observation.images.<name>``, matched to each tick by capture time
(``tether.robot.camera_sync``). Frames stream into the dataset writer as they come, videos are
encoded meanwhile, and nothing of an episode is in the dataset until it is saved whole.

Two modes:
- episodic: an episode ends when the server says ``done`` or the operator calls
  ``end_episode()``; ``discard_episode()`` drops it (re-record). A gap in the step sequence (lost
  messages) or a reset before the end drops it with a warning, so a dataset never holds a
  silently damaged episode.
- play (``play_episode_s``): one continuous stream without resets, split into episodes of fixed
  length; a gap or a reset closes the current piece and starts the next.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from tether.perception.cameras.base import Camera, CameraError
from tether.robot.camera_sync import CameraStream, CameraSyncStats
from tether.robot.client import RobotClient, RobotLinkError
from tether.robot.dataset import DatasetWriter
from tether.robot.dataset.writer import EpisodeWriter
from tether.robot.security import ClientKeys
from tether.robot.spec import Feature, RobotSpec

log = logging.getLogger(__name__)

WARN_EVERY_S = 5.0  # at most one "below fps" warning per interval, with the running counts


@dataclass
class RecorderStats:
    """Episodes written and dropped (with the reason logged), frames written, stream gaps,
    late ticks (the robot's loop ran more than 1.5 periods between two states: below fps), and
    per-camera matching statistics."""

    episodes_written: int = 0
    episodes_dropped: int = 0
    frames_written: int = 0
    gaps: int = 0
    late_ticks: int = 0
    cameras: dict[str, CameraSyncStats] = field(default_factory=dict)


@dataclass
class _Episode:
    episode: int  # the server's episode number
    task: str | None
    last_step: int
    pending: dict[str, np.ndarray]  # the observation whose action has not arrived yet
    held: dict | None = None  # the last complete frame, emitted when the next one (or the end) comes
    frames: int = 0


class EpisodeAssembler:
    """Turns the state stream of a robot server into episode events.

    ``handle(state)`` returns a list of events, each a tuple: ``("begin", task)``,
    ``("frame", frame)`` (feature key -> value for one frame, ``next.*`` included),
    ``("end",)`` (save the episode) or ``("drop", reason)`` (discard it).

    Args:
        play_frames: play mode, split into episodes of this many frames; None is episodic mode.
    """

    def __init__(self, play_frames: int | None = None) -> None:
        self.play_frames = play_frames
        self.stats = RecorderStats()
        self._current: _Episode | None = None
        self._closed_episode: int | None = None  # ended by the operator; its later ticks are ignored

    @property
    def recording(self) -> bool:
        """An episode is in progress."""
        return self._current is not None

    def handle(self, state: dict) -> list[tuple]:
        """Feed one state message; the events it causes."""
        events: list[tuple] = []
        ep = self._current
        if ep is not None and state["episode"] != ep.episode:
            if self.play_frames:
                events += self._close()
            else:
                events += self._drop("a new episode started before it finished")
            ep = None
        if ep is None:
            if state["episode"] == self._closed_episode or state["done"]:
                return events  # idle, or the rest of an episode the operator ended
            if state["step"] != 0 and not self.play_frames:
                return events  # joined mid-episode: wait for the next reset
            self._current = _Episode(state["episode"], state["task"], state["step"],
                                     dict(state["observation"]))
            return events + [("begin", state["task"])]
        if state["step"] == ep.last_step:
            return events  # the server idles (episode done, waiting for a reset)
        if state["step"] != ep.last_step + 1 or state["action"] is None:
            self.stats.gaps += 1
            why = f"gap in the state stream (step {ep.last_step} -> {state['step']})"
            if self.play_frames:
                log.warning("%s: closing the current piece of play", why)
                return events + self._close() + self.handle(state)
            return events + self._drop(why)
        frame = {
            **ep.pending,
            "action": state["action"],
            "next.reward": state["reward"],
            "next.success": state["success"],
            "next.done": state["done"],
        }
        if ep.held is not None:
            events.append(("frame", ep.held))
        ep.held, ep.frames = frame, ep.frames + 1
        ep.pending = dict(state["observation"])
        ep.last_step = state["step"]
        if state["done"]:
            events += self._close()
        elif self.play_frames and ep.frames >= self.play_frames:
            events += self._close()
            self._current = _Episode(ep.episode, ep.task, ep.last_step, ep.pending)
            events.append(("begin", ep.task))
        return events

    def end_episode(self) -> list[tuple]:
        """The operator ends the episode in progress: save what was recorded (the last frame gets
        ``next.done``); later ticks of the same server episode are ignored until a reset."""
        if self._current is None:
            return []
        self._closed_episode = self._current.episode
        return self._close()

    def discard_episode(self, why: str = "the operator discarded it") -> list[tuple]:
        """Drop the episode in progress (re-record); later ticks of it are ignored until a reset."""
        if self._current is None:
            return []
        self._closed_episode = self._current.episode
        return self._drop(why)

    def _close(self) -> list[tuple]:
        ep, self._current = self._current, None
        if ep is None:
            return []
        if ep.held is None:
            return [("drop", "no complete frame")]
        return [("frame", {**ep.held, "next.done": True}), ("end",)]

    def _drop(self, why: str) -> list[tuple]:
        ep, self._current = self._current, None
        if ep is None:
            return []
        log.warning("dropped episode %d of the robot server: %s", ep.episode, why)
        return [("drop", why)]


def camera_features(spec: RobotSpec, cameras: Sequence[Camera]) -> RobotSpec:
    """``spec`` with one ``observation.images.<name>`` feature per camera, shaped like its frames
    (each camera is started, read once and stopped to learn its frame size).

    Raises:
        ValueError: a camera's name is already an observation of the robot, or two cameras share
            a name.
        tether.perception.cameras.CameraError: a camera cannot be opened or gives no frame.
    """
    observation = dict(spec.observation)
    for cam in cameras:
        key = f"observation.images.{cam.name}"
        if key in observation:
            raise ValueError(f"{key} is already an observation of the robot or another camera; "
                             "rename the camera")
        cam.start()
        try:
            shape = tuple(cam.read(timeout_s=5.0).image.shape)
        finally:
            cam.stop()
        observation[key] = Feature("uint8", shape, unit="pixel")
    return RobotSpec(spec.robot_type, spec.control_rate_hz, observation, spec.action,
                     spec.tasks, spec.safety)


class Recorder:
    """Record the robot server at ``address`` (and ``cameras``) into ``writer``, in a thread.

    Args:
        address: the robot server.
        writer: an open ``DatasetWriter`` whose spec is the server's plus one image feature per
            camera (see ``camera_features``) and whose fps is the server's control rate.
        task: the task string of every episode; None: the server's task of the episode (a
            simulator's task name), or ``"default"`` when it has none (hardware).
        cameras: cameras on this machine, started here; matched to ticks by capture time.
        play_episode_s: play mode, split into episodes of this length (s); None is episodic.
        keys: CurveZMQ keys for a server that requires them.

    Raises:
        tether.robot.spec.SpecMismatchError: the server's spec does not fit the dataset's.
        tether.robot.client.RobotLinkError: the server does not answer.
        tether.perception.cameras.CameraError: a camera cannot be opened (names it).
        ValueError: the writer's fps is not the server's control rate, or a camera's frames do
            not match the dataset's image feature.
    """

    def __init__(
        self,
        address: str,
        writer: DatasetWriter,
        task: str | None = None,
        cameras: Sequence[Camera] = (),
        play_episode_s: float | None = None,
        keys: ClientKeys | None = None,
    ):
        self.writer = writer
        self.task = task
        play_frames = None if play_episode_s is None else max(1, round(play_episode_s * writer.fps))
        self.assembler = EpisodeAssembler(play_frames)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._requests: queue.Queue = queue.Queue()
        self._episode: EpisodeWriter | None = None
        self._last_tick: tuple[int, float] | None = None  # (episode, server time) of the last state
        self._clock_offset = float("inf")
        self._warned = 0.0
        self._client = RobotClient(address, role="observer", name="recorder", keys=keys)
        spec = self._client.connect()
        self._streams = [CameraStream(c, 1.0 / writer.fps) for c in cameras]
        try:
            camera_keys = {f"observation.images.{c.name}" for c in cameras}
            robot_part = RobotSpec(writer.spec.robot_type, writer.spec.control_rate_hz,
                                   {k: f for k, f in writer.spec.observation.items() if k not in camera_keys},
                                   writer.spec.action, writer.spec.tasks, writer.spec.safety)
            spec.check_policy(robot_part, tasks=())
            if abs(spec.control_rate_hz - writer.fps) > 1e-6:
                raise ValueError(f"the dataset is at {writer.fps:g} fps but the robot runs at "
                                 f"{spec.control_rate_hz:g} Hz: record at the control rate")
            for stream in self._streams:
                image = stream.start()
                expected = writer.spec.observation.get(f"observation.images.{stream.name}")
                if expected is None or image.shape != expected.shape:
                    raise ValueError(f"camera {stream.name!r} gives {image.shape} frames; the "
                                     f"dataset expects {expected.shape if expected else 'none'}")
                self.stats.cameras[stream.name] = stream.stats
        except BaseException:
            self._close_inputs()
            raise

    @property
    def stats(self) -> RecorderStats:
        return self.assembler.stats

    @property
    def recording(self) -> bool:
        """An episode is in progress."""
        return self.assembler.recording

    def handle(self, state: dict) -> None:
        """Process one state message (in the recording thread): match camera frames, write."""
        t_local = self._local_time(state)
        if self._streams:
            state = {**state, "observation": {
                **state["observation"],
                **{f"observation.images.{s.name}": s.frame_for(t_local).image for s in self._streams},
            }}
        self._apply(self.assembler.handle(state))

    def _local_time(self, state: dict, count: bool = True) -> float:
        """The tick's time on this machine's monotonic clock. The server stamps states with its
        own clock; the smallest (arrival - stamp) seen is the clock offset plus the least
        transport delay, so it maps server time to local time on any machine, and, unlike the
        arrival time, it does not move when this thread falls behind. ``count``: also count late
        ticks (once per state)."""
        self._clock_offset = min(self._clock_offset, state["received"] - state["t"])
        t = state["t"] + self._clock_offset
        if not count:
            return t
        period = 1.0 / self.writer.fps
        last = self._last_tick
        lockstep = state["timing"].get("lockstep", False)  # ticks follow the controller, not a clock
        if (last is not None and not lockstep and last[0] == state["episode"]
                and state["t"] - last[1] > 1.5 * period):
            self.stats.late_ticks += 1  # (a reset may take longer than a tick: not counted)
            self._warn_below_fps()
        self._last_tick = (state["episode"], state["t"])
        return t

    def _warn_below_fps(self) -> None:
        now = time.monotonic()
        if now - self._warned < WARN_EVERY_S:
            return
        self._warned = now
        cams = ", ".join(f"{n}: {s.repeated} repeated" for n, s in self.stats.cameras.items())
        log.warning("recording below %g fps: %d late ticks of the robot%s", self.writer.fps,
                    self.stats.late_ticks, f"; cameras {cams}" if cams else "")

    def _apply(self, events: list[tuple]) -> None:
        for event in events:
            kind = event[0]
            if kind == "begin":
                self._episode = self.writer.begin_episode(self.task or event[1] or "default")
            elif kind == "frame":
                self._episode.add_frame(event[1])
            elif kind == "end":
                episode, self._episode = self._episode, None
                index = episode.save()
                self.stats.episodes_written += 1
                self.stats.frames_written += len(episode)
                log.info("recorded episode %d (%d frames, task %r)", index, len(episode), episode.task)
            elif kind == "drop":
                if self._episode is not None:
                    self._episode.discard()
                    self._episode = None
                self.stats.episodes_dropped += 1
        for stream in self._streams:
            if stream.stats.repeated and stream.stats.repeated % 30 == 1:
                self._warn_below_fps()

    def end_episode(self, timeout_s: float = 10.0) -> None:
        """Save the episode in progress now (operator's "end episode"); returns once it is saved."""
        self._request(self.assembler.end_episode, timeout_s)

    def discard_episode(self, timeout_s: float = 10.0) -> None:
        """Drop the episode in progress (operator's "re-record"); returns once it is dropped."""
        self._request(self.assembler.discard_episode, timeout_s)

    def _request(self, action, timeout_s: float) -> None:
        if self._thread is None:
            self._apply(action())
            return
        done = threading.Event()
        self._requests.put((action, done, time.monotonic()))
        if not done.wait(timeout_s):
            raise TimeoutError("the recorder did not answer (is it stuck writing?)")
        self.check()

    def check(self) -> None:
        """Raise the error that stopped the recording thread, if any (a camera that failed names
        itself); the episode in progress was discarded, earlier ones are intact."""
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._serve_requests()
                try:
                    state = self._client.next_state(timeout_s=0.05)
                except RobotLinkError:
                    continue
                self.handle(state)
            self._serve_requests()
        except (CameraError, OSError, ValueError) as e:
            self.error = e
            log.error("recording stopped: %s", e)
            self._apply(self.assembler.discard_episode(f"recording failed: {e}"))
            self._serve_requests()

    def _serve_requests(self) -> None:
        while True:
            try:
                action, done, requested_at = self._requests.get_nowait()
            except queue.Empty:
                return
            # Ticks from before the operator's key press belong to the episode being ended, even
            # if this thread has not read them yet; the first later one comes after the action.
            later = None
            while later is None and self._client.pending():
                state = self._client.next_state(timeout_s=0.0)
                if self._local_time(state, count=False) > requested_at:
                    later = state
                else:
                    self.handle(state)
            if self.error is None:
                self._apply(action())
                if later is not None:
                    self.handle(later)
            done.set()

    def start(self) -> Recorder:
        """Record in a background thread until ``stop()``."""
        self._thread = threading.Thread(target=self._loop, name="recorder", daemon=True)
        self._thread.start()
        return self

    def wait_for(self, episodes: int, timeout_s: float) -> bool:
        """Wait until ``episodes`` episodes were written or dropped; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.stats.episodes_written + self.stats.episodes_dropped < episodes:
            if time.monotonic() > deadline or self.error is not None:
                return False
            time.sleep(0.02)
        return True

    def stop(self) -> RecorderStats:
        """Stop recording and close the link and cameras. In episodic mode an unfinished episode
        is dropped; in play mode the piece in progress is saved."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self.error is None and self.assembler.recording:
            if self.assembler.play_frames:
                self._apply(self.assembler.end_episode())
            else:
                self._apply(self.assembler.discard_episode("recording stopped mid-episode"))
        self._close_inputs()
        return self.stats

    def _close_inputs(self) -> None:
        for stream in self._streams:
            stream.stop()
        self._client.close()
