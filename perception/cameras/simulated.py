"""A simulated camera with the interface of the real ones.

It renders on demand, in the caller's thread: a simulator's state must not change while it is
rendered, so the owner of the simulation (e.g. a sim driver, once per control tick) calls ``read``.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from tether.perception.cameras.base import CameraError, Frame


class SimulatedCamera:
    """Wrap ``render`` (a function returning RGB uint8 [H, W, 3], e.g.
    ``tether.sim.render.OffscreenCamera.render`` bound to the sim's data) as a camera."""

    def __init__(self, render: Callable[[], np.ndarray], name: str = "sim"):
        self.render, self.name = render, name
        self.frames = 0
        self._started = False

    def start(self) -> None:
        self._started = True

    def read(self, timeout_s: float = 1.0) -> Frame:
        """Render and return a frame now (``timeout_s`` is unused: rendering does not wait).

        Raises:
            CameraError: not started, or the renderer returned something that is not an image.
        """
        if not self._started:
            raise CameraError(f"camera {self.name!r}: start() it first")
        image = self.render()
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.dtype == np.uint8):
            raise CameraError(f"camera {self.name!r}: the renderer returned no RGB uint8 image")
        frame = Frame(image, time.monotonic(), self.frames)
        self.frames += 1
        return frame

    def stop(self) -> None:
        self._started = False
