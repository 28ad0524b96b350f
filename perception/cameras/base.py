"""The camera interface shared by real and simulated cameras."""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class CameraError(RuntimeError):
    """A camera is missing, cannot be opened, or stopped delivering frames (the message names it)."""


@dataclass(frozen=True)
class Frame:
    """One image.

    Attributes:
        image: RGB, uint8, [height, width, 3].
        timestamp: ``time.monotonic()`` at capture (s), comparable with the robot link's clocks
            on the same machine.
        index: frame counter since ``start()``.
        depth: a depth camera's depth map aligned to ``image`` pixel for pixel, uint16
            [height, width] in mm, 0 where nothing was measured; None for a colour-only camera.
    """

    image: np.ndarray
    timestamp: float
    index: int
    depth: np.ndarray | None = None


class Camera(Protocol):
    """What the recorder and the policy runner need from a camera."""

    name: str

    def start(self) -> None:
        """Open the device; raises CameraError naming it when it cannot."""

    def read(self, timeout_s: float = 1.0) -> Frame:
        """The newest frame not returned before; raises CameraError after ``timeout_s`` without one."""

    def stop(self) -> None:
        """Release the device."""


class NewestFrame:
    """The newest frame a camera's capture thread delivered, handed to ``read`` once.

    A frame replaced before anyone read it counts in ``dropped`` (a consumer slower than the
    camera gets the newest frame, never a queue of stale ones); ``frames`` counts every frame
    put, so it is also the next frame's index. ``end(why)`` tells waiting readers the stream is
    over.
    """

    def __init__(self):
        self.frames = 0
        self.dropped = 0
        self._latest: Frame | None = None
        self._returned = -1
        self._ended: str | None = None
        self._cond = threading.Condition()

    def restart(self) -> None:
        """Forget an earlier stream's end (a camera started again)."""
        with self._cond:
            self._ended = None

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._latest is not None and self._latest.index > self._returned:
                self.dropped += 1
            self._latest = frame
            self.frames += 1
            self._cond.notify_all()

    def end(self, why: str) -> None:
        with self._cond:
            self._ended = why
            self._cond.notify_all()

    def take(self, timeout_s: float, describe: str) -> Frame:
        """The newest frame not returned before, waiting up to ``timeout_s`` (s) for one.

        Raises:
            CameraError: ``describe`` (the camera) and why: the stream ended, or no new frame
                came within ``timeout_s``.
        """
        with self._cond:
            def new() -> bool:
                return self._latest is not None and self._latest.index > self._returned

            ready = self._cond.wait_for(lambda: new() or self._ended is not None, timeout_s)
            if new():
                self._returned = self._latest.index
                return self._latest
            why = self._ended if ready else f"delivered no frame for {timeout_s:.1f} s"
            raise CameraError(f"{describe} {why}")


class ThreadedCamera(abc.ABC):
    """What cameras captured in a background thread share: the ``NewestFrame`` buffer
    (``_buffer``), its counts and ``read``. A subclass sets ``_thread`` while it captures and
    names itself in ``_describe()``."""

    _thread: threading.Thread | None = None

    def __init__(self):
        self._buffer = NewestFrame()

    @abc.abstractmethod
    def _describe(self) -> str:
        """The camera in error messages, e.g. ``camera 'top' (/dev/video2)``."""

    @property
    def frames(self) -> int:
        """Frames captured since construction."""
        return self._buffer.frames

    @property
    def dropped(self) -> int:
        """Frames replaced by a newer one before ``read`` took them."""
        return self._buffer.dropped

    def read(self, timeout_s: float = 1.0) -> Frame:
        """The newest frame not returned before.

        Raises:
            CameraError: not started, or no new frame within ``timeout_s`` (the device stopped
                delivering or was unplugged).
        """
        if self._thread is None:
            raise CameraError(f"{self._describe()}: start() it first")
        return self._buffer.take(timeout_s, self._describe())
