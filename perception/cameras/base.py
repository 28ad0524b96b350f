"""The camera interface shared by real and simulated cameras."""

from __future__ import annotations

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
