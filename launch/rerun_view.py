"""Rerun views of datasets and of running robots (the ``rerun`` extra: ``pip install 'tether[rerun]'``).

Two views, one entity layout (Rerun's data model: entity paths, timelines, archetypes;
https://rerun.io/docs/concepts):

* ``log_dataset``: ``tether dataset view DATASET --rerun``. Every vector feature of the dataset as
  one scalar series per element, ``<feature key>/<element name>`` (``observation.state/x``,
  ``action/y``, ``next.reward``, ``next.success`` as 0/1, relabelled ``reward.*`` columns), each
  camera decoded from its MP4 as ``cameras/<video key>``, the episode index as ``episode`` and one
  ``episodes`` text entry at each episode's first frame. Timelines: ``frame`` (the dataset's global
  ``index``), ``time`` (``index / fps`` s: the episodes end to end) and ``frame_index`` (within its
  episode).
* ``LiveView``: ``--rerun`` on ``tether teleop``, ``collect`` and ``eval``. Per element of the
  action ``joints/<name>/commanded`` (what this client sent) and ``joints/<name>/applied`` (what the
  server applied after its safety layer), per element of ``observation.state``
  ``joints/<name>/measured`` (the three overlay in one plot where the action and the state name the
  same joint), other vector observations as ``<key>/<name>``, the robot's cameras as
  ``cameras/<key>``, ``policy/latency_ms`` (the caller's policy step), ``link/command_latency_ms``
  and ``link/period_ms`` (the server's ``timing``), ``reward``, ``success``, ``safety/estop``
  (latched, 0/1), ``safety/held`` (ticks the server held for want of a command) and ``events``
  (e-stop, e-stop cleared, watchdog, episode starts and ends, ``operator: <event>``) as text logs.
  Timelines: ``tick`` (the state's ``seq``) and ``time`` (the server's clock, s).

The live view never runs in the control loop's thread: ``observe`` puts the state on a bounded
queue and returns (a full queue drops the state and counts it); a background thread drains the
queue in batches and sends each entity's batch as columns (``RecordingStream.send_columns``), so
Rerun's cost per tick stays small and the loop never waits for a viewer.

Rerun is imported only when a view is asked for: the robot side and a base install never need it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tether.launch import UsageError

log = logging.getLogger(__name__)

RERUN_EXTRA = "rerun"
NO_DISPLAY = ("no display for a Rerun viewer here (DISPLAY and WAYLAND_DISPLAY are unset): write a "
              "recording with {flag} FILE.rrd and open it with `rerun FILE.rrd` where there is a screen")
# LeRobot's bookkeeping columns: the timelines, not curves.
BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
EVENT_LEVELS = {"estop": "ERROR", "watchdog": "WARN", "estop_cleared": "INFO", "operator: estop": "ERROR"}
EVENT_TEXT = {"estop": "e-stop latched: the robot holds", "estop_cleared": "e-stop cleared",
              "watchdog": "watchdog: no valid command in time, the robot holds"}


def import_rerun():
    """The ``rerun`` module.

    Raises:
        UsageError: rerun-sdk is not installed (the message says how to install it).
    """
    try:
        import rerun
    except ImportError as e:
        raise UsageError(f"the Rerun view needs rerun-sdk, which is not installed ({e}): "
                         f"pip install 'tether[{RERUN_EXTRA}]'") from None
    return rerun


def check_viewable(save: Path | None, flag: str = "--save"):
    """Check, before anything is written or moved, that a view can be opened: rerun-sdk is
    installed and, without ``save``, there is a display for a viewer. Returns the ``rerun`` module.

    Raises:
        UsageError: rerun-sdk missing, or no ``save`` and no display (``flag`` names the option
            that writes a recording instead).
    """
    rr = import_rerun()
    if save is None and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UsageError(NO_DISPLAY.format(flag=flag))
    return rr


def open_recording(name: str, save: Path | None, flag: str = "--save"):
    """A Rerun recording (``rerun.RecordingStream``, application ``tether_<name>``) that writes
    ``save`` (an .rrd file, folders made), or with ``save`` None streams to a viewer it spawns.

    Raises:
        UsageError: rerun-sdk missing; no ``save`` and no display to show a viewer on (``flag``
            names the option that writes a file instead).
    """
    rr = check_viewable(save, flag)
    rec = rr.RecordingStream(f"tether_{name}")
    if save is not None:
        save = Path(save)
        save.parent.mkdir(parents=True, exist_ok=True)
        rec.save(save)
    else:
        rec.spawn()
    return rec


def entity(*parts: str) -> str:
    """An entity path from parts taken literally (a joint named ``a/b`` stays one part)."""
    rr = import_rerun()
    return "/".join(rr.escape_entity_path_part(str(p)) for p in parts)


def element_names(names: Any, key: str, width: int) -> list[str]:
    """Names of a vector feature's ``width`` elements: the feature's names (LeRobot stores a list,
    or a dict of one list) when they fit, else ``<key>[j]``."""
    if isinstance(names, dict) and len(names) == 1:
        names = next(iter(names.values()))
    if isinstance(names, (list, tuple)) and len(names) == width and all(isinstance(n, str) for n in names):
        return list(names)
    return [f"{key}[{j}]" for j in range(width)]


# ------------------------------------------------------------------------------------ dataset
@dataclass
class DatasetViewStats:
    """What ``log_dataset`` logged: episodes, frames, scalar series (entities), camera images."""

    episodes: int
    frames: int
    series: int
    images: int


def vector_features(ds) -> list[str]:
    """The dataset's features logged as curves: every non-image feature of one dimension but
    LeRobot's bookkeeping columns."""
    return [k for k, f in ds.features.items()
            if f["dtype"] not in ("video", "image") and len(f["shape"]) == 1 and k not in BOOKKEEPING]


def log_dataset(rec, ds, episodes: Sequence[int], jpeg_quality: int = 90) -> DatasetViewStats:
    """Log episodes of ``ds`` (a ``tether.robot.dataset.Dataset``) to the recording ``rec``, in
    the layout of the module docstring.

    Args:
        episodes: positions in ``ds.episodes`` (checked by the caller).
        jpeg_quality: 1-100: camera frames are logged JPEG-encoded at this quality (a tenth of the
            memory of raw pixels in the viewer); 0: raw RGB pixels.

    Raises:
        tether.robot.dataset.DatasetError: a data file or video cannot be read (names the file).
        UsageError: ``jpeg_quality`` outside 0-100.
    """
    rr = import_rerun()
    if not 0 <= jpeg_quality <= 100:
        raise UsageError(f"--jpeg-quality must be 0 (raw pixels) to 100, not {jpeg_quality}")
    keys = vector_features(ds)
    rec.log("dataset", rr.TextDocument(
        f"{ds.root.name}: {len(ds)} episodes, {ds.num_frames} frames at {ds.fps:g} fps; tasks: "
        f"{', '.join(ds.tasks)}"), static=True)
    names = {k: element_names(ds.features[k].get("names"), k, ds.features[k]["shape"][0]) for k in keys}
    for key in keys:
        for name in names[key]:
            path = entity(key) if ds.features[key]["shape"][0] == 1 else entity(key, name)
            rec.log(path, rr.SeriesLines(names=name), static=True)
    series, images, frames = sum(len(n) for n in names.values()) + 1, 0, 0
    for i in episodes:
        row = ds.episodes[i]
        n = int(row["length"])
        data = ds.episode(i, [*keys, "index", "frame_index", "episode_index"])
        index = data["index"].reshape(n).astype(np.int64)
        times = [rr.TimeColumn("frame", sequence=index),
                 rr.TimeColumn("time", duration=index / ds.fps),
                 rr.TimeColumn("frame_index", sequence=data["frame_index"].reshape(n).astype(np.int64))]
        for key in keys:
            values = data[key].reshape(n, -1).astype(np.float64)  # bools as 0 / 1
            for j, name in enumerate(names[key]):
                path = entity(key) if values.shape[1] == 1 else entity(key, name)
                rec.send_columns(path, indexes=times, columns=rr.Scalars.columns(scalars=values[:, j]))
        episode_index = int(row["episode_index"])
        rec.send_columns("episode", indexes=times,
                         columns=rr.Scalars.columns(scalars=np.full(n, episode_index, np.float64)))
        success = data["next.success"].reshape(-1)[-1] if "next.success" in data else None
        rec.set_time("frame", sequence=int(index[0]))
        rec.set_time("time", duration=float(index[0] / ds.fps))
        rec.set_time("frame_index", sequence=0)
        rec.log("episodes", rr.TextLog(
            f"episode {episode_index}: task {', '.join(row['tasks'])!r}, {n} frames"
            + ("" if success is None else f", success {bool(success)}"), level="INFO"))
        for key in ds.video_keys:
            h, w = ds.features[key]["shape"][:2]
            video = ds.video(key, i)[:n, :h, :w]  # crop the encoder's even-size padding
            path = entity("cameras", key)
            for j, frame in enumerate(video):
                rec.set_time("frame", sequence=int(index[j]))
                rec.set_time("time", duration=float(index[j] / ds.fps))
                rec.set_time("frame_index", sequence=j)
                image = rr.Image(np.ascontiguousarray(frame))
                rec.log(path, image.compress(jpeg_quality=jpeg_quality) if jpeg_quality else image)
            images += len(video)
        frames += n
    return DatasetViewStats(len(episodes), frames, series, images)


# --------------------------------------------------------------------------------------- live
@dataclass
class LiveViewStats:
    """What a ``LiveView`` did: states offered, dropped (queue full), logged; events logged."""

    offered: int = 0
    dropped: int = 0
    logged: int = 0
    events: int = 0


class LiveView:
    """A live Rerun view of a robot link, fed by a control loop without slowing it.

    ``observe`` (call it from the loop, once per state) never blocks: it puts the state on a
    queue of ``queue_size`` and returns; when the queue is full the state is dropped and counted
    (``stats.dropped``); events are kept apart (up to 10 000 waiting) so a dropped state loses
    none. A daemon thread takes whatever is queued every ``flush_s`` and logs it (layout: module
    docstring), one ``send_columns`` per entity and batch; it gives up the GIL between calls
    (``time.sleep(0)``) so a loop waiting for the GIL gets it within one call (about 0.2 ms).
    Should logging fail (``error`` then says why), the view stops and drops what comes; the loop
    never sees the exception.

    Args:
        rec: a ``rerun.RecordingStream`` (``open_recording``); ``close`` disconnects it.
        spec: the robot's ``RobotSpec`` (names of the action and observation elements).
        queue_size: states that may wait (at 1 kHz, 1024 are one second of a stalled viewer).
        flush_s: seconds between batches.

    Raises:
        UsageError: rerun-sdk missing, ``queue_size`` < 1 or ``flush_s`` <= 0.
    """

    def __init__(self, rec, spec, queue_size: int = 1024, flush_s: float = 0.1):
        self._rr = import_rerun()
        if queue_size < 1 or flush_s <= 0:
            raise UsageError(f"a live view needs queue_size >= 1 and flush_s > 0, not {queue_size}, {flush_s}")
        self.rec, self.spec, self.flush_s = rec, spec, flush_s
        self.stats = LiveViewStats()
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._events: deque = deque(maxlen=10_000)
        self._last_episode: int | None = None
        self._last_done = False
        self._formats: set[str] = set()
        self._closing = threading.Event()
        self.error: str | None = None
        action = spec.action
        self._action_names = element_names(action.names, "action", int(np.prod(action.shape)))
        self._vectors = {k: element_names(f.names, k, int(np.prod(f.shape)))
                         for k, f in spec.observation.items() if not f.is_image}
        self._cameras = [k for k, f in spec.observation.items() if f.is_image]
        # entity paths made once: escaping them per value would cost more than logging
        self._commanded = [entity("joints", n, "commanded") for n in self._action_names]
        self._applied = [entity("joints", n, "applied") for n in self._action_names]
        self._measured = {k: [entity("joints", n, "measured") if k == "observation.state" else entity(k, n)
                              for n in names] for k, names in self._vectors.items()}
        self._camera_paths = {k: entity("cameras", k) for k in self._cameras}
        self._dropped_after_error = 0  # the drainer's count (stats.dropped is the loop's)
        self._log_names()
        self._thread = threading.Thread(target=self._drain, name="tether-rerun-view", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ loop side (never blocks)
    def observe(self, state: dict, commanded: np.ndarray | None = None,
                latency_s: float | None = None, events: Sequence[str] = ()) -> bool:
        """Offer one state message (``tether.robot.client``'s), with the action this client sent
        answering it (or its chunk [K, A]: the first action is shown), the policy step that made
        it (s) and operator events of this tick. Returns False when the state was dropped."""
        self.stats.offered += 1
        tick, t = state["seq"], state["t"]
        for event in state.get("events", ()):
            self._events.append((tick, t, event))
        for event in events:  # the operator's: "estop" here is the request, the server's the latch
            self._events.append((tick, t, f"operator: {event}"))
        if commanded is not None:
            commanded = np.array(commanded, np.float64).reshape(-1, len(self._action_names))[0]
        try:
            self._queue.put_nowait((state, commanded, latency_s))
            return True
        except queue.Full:
            self.stats.dropped += 1
            return False

    def note(self, text: str, state: dict | None = None) -> None:
        """A text event (e.g. "episode saved") at ``state``'s tick, else at the last state's."""
        self._events.append((None if state is None else state["seq"],
                             None if state is None else state["t"], text))

    # ------------------------------------------------------------------------- drainer thread
    def _log_names(self) -> None:
        rr = self._rr
        for name, commanded, applied in zip(self._action_names, self._commanded, self._applied):
            self.rec.log(commanded, rr.SeriesLines(names=f"{name} commanded"), static=True)
            self.rec.log(applied, rr.SeriesLines(names=f"{name} applied"), static=True)
        for key, names in self._vectors.items():
            for name, path in zip(names, self._measured[key]):
                label = f"{name} measured" if key == "observation.state" else name
                self.rec.log(path, rr.SeriesLines(names=label), static=True)

    def _drain(self) -> None:
        while True:
            # whatever came in flush_s goes in one batch: a chunk per entity, not per tick (a
            # chunk of one row costs as much to send and ~40 bytes of data + its schema to store)
            self._closing.wait(self.flush_s)
            batch = []
            try:
                while True:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            items = [b for b in batch if b is not None]
            if self.error is not None:
                self._dropped_after_error += len(items)
            elif items or self._events:
                try:
                    self._log_batch(items)
                except Exception as e:  # a view must never take the loop down: it goes blank
                    self.error = f"{type(e).__name__}: {e}"
                    self._dropped_after_error += len(items)
                    log.warning("Rerun view stopped logging (%s); the robot runs on", self.error)
            if len(items) < len(batch):  # close()'s sentinel: everything before it is handled
                return

    def _series(self, columns: dict, path: str, tick: int, t: float, value: float) -> None:
        ticks, times, values = columns.setdefault(path, ([], [], []))
        ticks.append(tick)
        times.append(t)
        values.append(value)

    def _log_batch(self, items: list) -> None:
        rr = self._rr
        columns: dict[str, tuple[list, list, list]] = {}
        images: dict[str, tuple[list, list, list]] = {}
        last = (None, None)
        for state, commanded, latency_s in items:
            tick, t, timing = state["seq"], state["t"], state["timing"]
            last = (tick, t)
            if state["episode"] != self._last_episode and state["episode"] >= 0:
                self._events.append((tick, t, f"episode {state['episode']} started: task {state['task']!r}"))
                self._last_done = False
            if state["done"] and not self._last_done:
                self._events.append((tick, t, f"episode {state['episode']} ended: success {bool(state['success'])}"))
            self._last_episode, self._last_done = state["episode"], bool(state["done"])
            add = lambda path, value: self._series(columns, path, tick, t, value)  # noqa: E731
            if commanded is not None:
                for path, v in zip(self._commanded, commanded):
                    add(path, float(v))
            if state["action"] is not None:
                for path, v in zip(self._applied, np.asarray(state["action"], np.float64).reshape(-1)):
                    add(path, float(v))
            obs = state["observation"]
            for key, paths in self._measured.items():
                if key in obs:
                    for path, v in zip(paths, np.asarray(obs[key], np.float64).reshape(-1)):
                        add(path, float(v))
            for key in self._cameras:
                if key in obs:
                    ticks, times, frames = images.setdefault(key, ([], [], []))
                    ticks.append(tick)
                    times.append(t)
                    frames.append(obs[key])
            if latency_s is not None:
                add("policy/latency_ms", 1e3 * latency_s)
            if timing.get("command_latency_s") is not None:
                add("link/command_latency_ms", 1e3 * timing["command_latency_s"])
            if timing.get("period_s") is not None:
                add("link/period_ms", 1e3 * timing["period_s"])
            add("reward", float(state["reward"]))
            add("success", float(bool(state["success"])))
            add("safety/estop", float(bool(state["estop"])))
            if state["episode"] >= 0 and not state["done"]:
                add("safety/held", float(timing.get("command_age_s") is None and not state["estop"]))
        for path, (ticks, times, values) in columns.items():
            self.rec.send_columns(path, indexes=self._indexes(ticks, times),
                                  columns=rr.Scalars.columns(scalars=np.asarray(values, np.float64)))
            time.sleep(0)  # let a control loop waiting for the GIL have it
        for key, (ticks, times, frames) in images.items():
            self._log_images(key, ticks, times, frames)
            time.sleep(0)
        self._log_events(*last)
        self.stats.logged += len(items)

    def _indexes(self, ticks: list, times: list) -> list:
        rr = self._rr
        return [rr.TimeColumn("tick", sequence=np.asarray(ticks, np.int64)),
                rr.TimeColumn("time", duration=np.asarray(times, np.float64))]

    def _log_images(self, key: str, ticks: list, times: list, frames: list) -> None:
        rr = self._rr
        path = self._camera_paths[key]
        stack = np.stack([np.asarray(f, np.uint8) for f in frames])
        if key not in self._formats:  # one static format; each tick then sends its pixels only
            h, w = stack.shape[1:3]
            model = "L" if stack.ndim == 3 or stack.shape[3] == 1 else ("RGBA" if stack.shape[3] == 4 else "RGB")
            self.rec.log(path, rr.Image.from_fields(format=rr.components.ImageFormat(
                width=w, height=h, color_model=model, channel_datatype="U8")), static=True)
            self._formats.add(key)
        self.rec.send_columns(path, indexes=self._indexes(ticks, times),
                              columns=rr.Image.columns(buffer=stack.reshape(len(stack), -1)))

    def _log_events(self, last_tick, last_t) -> None:
        rr = self._rr
        while self._events:
            tick, t, event = self._events.popleft()
            tick, t = (last_tick, last_t) if tick is None else (tick, t)
            if tick is None:
                continue  # a note before any state: nothing to place it at
            self.rec.set_time("tick", sequence=int(tick))
            self.rec.set_time("time", duration=float(t))
            self.rec.log("events", rr.TextLog(EVENT_TEXT.get(event, event),
                                              level=EVENT_LEVELS.get(event, "INFO")))
            self.stats.events += 1

    # ---------------------------------------------------------------------------------- close
    def close(self, timeout_s: float = 30.0) -> LiveViewStats:
        """Log everything still queued, stop the thread, disconnect the recording (an .rrd file is
        then complete). Call it outside the control loop: it waits up to ``timeout_s``."""
        if not self._closing.is_set():
            self._closing.set()
            self._queue.put(None, timeout=timeout_s)
            self._thread.join(timeout_s)
            self.rec.disconnect()
            self.stats.dropped += self._dropped_after_error
        return self.stats

    def __enter__(self) -> LiveView:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def live_view(name: str, spec, rerun: bool, save: Path | None) -> LiveView | None:
    """The ``LiveView`` a verb's ``--rerun`` / ``--rerun-save FILE.rrd`` ask for, or None.

    Raises:
        UsageError: rerun-sdk missing, or a viewer to spawn and no display (see ``open_recording``).
    """
    if not rerun and save is None:
        return None
    return LiveView(open_recording(name, save, flag="--rerun-save"), spec)
