"""Camera frames matched to control ticks by capture time, for the recorder.

Each camera is read in its own thread into a queue of frames not yet used. At each tick of the
robot (time ``t`` on this machine's ``time.monotonic()`` clock, period ``P``), ``frame_for(t)``
returns one frame:

1. it waits until a frame is queued, at most until ``t + P`` (a frame captured just after the
   tick is still that tick's frame); if none comes, the previous frame is used again and counted
   as ``repeated`` (the camera delivers below the dataset's fps);
2. while a newer queued frame was captured at least ``P / 2`` before ``t``, the older one is
   skipped and counted as ``skipped`` (the camera runs faster than the dataset's fps, or the
   recorder fell behind);
3. it returns the oldest queued frame.

A camera at the dataset's own rate therefore has each of its frames used exactly once, whatever
the phase between its clock and the robot's, and clock jitter of up to ``P / 2`` neither skips
nor repeats a frame (a rule that takes the frame nearest to ``t`` would flip between frames when
the two clocks are half a period apart). A frame is at most ~1.5 ``P`` from its tick.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from tether.perception.cameras.base import Camera, CameraError, Frame

log = logging.getLogger(__name__)


@dataclass
class CameraSyncStats:
    """Per camera: frames captured, used, skipped (camera ahead), repeated (camera behind),
    lost (the queue overflowed because the recorder stalled for seconds)."""

    captured: int = 0
    used: int = 0
    skipped: int = 0
    repeated: int = 0
    lost: int = 0


class CameraStream:
    """Read ``camera`` in a background thread and hand out frames matched to ticks.

    Args:
        camera: a started-or-not ``tether.perception.cameras.Camera``; ``start()`` starts it.
        period_s: the dataset's frame period P (s).
        timeout_s: how long without any frame before the camera counts as failed (s).
        queue_s: seconds of frames held for a recorder that stalls (more are lost and counted).
    """

    def __init__(self, camera: Camera, period_s: float, timeout_s: float = 2.0, queue_s: float = 3.0):
        self.camera, self.name = camera, camera.name
        self.period_s, self.timeout_s = period_s, timeout_s
        self.stats = CameraSyncStats()
        self.error: CameraError | None = None
        self._queue: collections.deque[Frame] = collections.deque()
        self._capacity = max(4, int(queue_s / period_s))
        self._last: Frame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> np.ndarray:
        """Start the camera and its reader; returns the first frame's image (its shape fixes the
        dataset feature).

        Raises:
            CameraError: the camera cannot be opened or delivers nothing within ``timeout_s``.
        """
        self.camera.start()
        first = self.camera.read(self.timeout_s)
        self._thread = threading.Thread(target=self._read, name=f"sync-{self.name}", daemon=True)
        self._thread.start()
        return first.image

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.camera.read(self.timeout_s)
            except Exception as e:  # noqa: BLE001 - a driver's own exception still names the camera
                with self._cond:
                    self.error = e if isinstance(e, CameraError) else CameraError(
                        f"camera {self.name!r} failed: {type(e).__name__}: {e}")
                    self._cond.notify_all()
                return
            with self._cond:
                self.stats.captured += 1
                if len(self._queue) >= self._capacity:
                    self._queue.popleft()
                    self.stats.lost += 1
                self._queue.append(frame)
                self._cond.notify_all()

    def frame_for(self, t: float) -> Frame:
        """The frame of the tick at ``t`` (``time.monotonic()`` s); rules in the module docstring.

        Raises:
            CameraError: the camera failed, or has delivered no frame at all (names the camera).
        """
        period = self.period_s
        with self._cond:
            deadline = t + period if self._last is not None else time.monotonic() + self.timeout_s
            self._cond.wait_for(lambda: self._queue or self.error is not None,
                                max(0.0, deadline - time.monotonic()))
            if not self._queue:
                if self.error is not None:
                    raise self.error
                if self._last is None:
                    raise CameraError(f"camera {self.name!r} delivered no frame for "
                                      f"{self.timeout_s:.1f} s")
                self.stats.repeated += 1
                return self._last
            while len(self._queue) > 1 and self._queue[1].timestamp <= t - period / 2:
                self._queue.popleft()
                self.stats.skipped += 1
            self._last = self._queue.popleft()
            self.stats.used += 1
            return self._last

    def stop(self) -> None:
        """Stop reading and release the camera."""
        self._stop.set()
        self.camera.stop()  # unblocks a read in progress
        if self._thread is not None:
            self._thread.join(self.timeout_s + 1)
            self._thread = None
