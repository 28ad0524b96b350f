"""A synthetic camera: frames generated on a fixed clock, for benchmarks and tests without devices.

It behaves like a free-running device: frame k is captured at ``start + k / fps`` whether or not
anyone reads it, and a reader that comes back late finds only the newest frame (the ones in
between are counted in ``dropped``, as a real driver overwrites its buffer). The image is a moving
colour gradient with sensor-like noise, so a video encoder works about as hard as on a real scene.
"""

from __future__ import annotations

import time

import numpy as np

from tether.perception.cameras.base import CameraError, Frame

_NOISE_FRAMES = 8


class SyntheticCamera:
    """Frames of ``width`` x ``height`` at ``fps`` (Hz) on this machine's ``time.monotonic()`` clock.

    Args:
        name: the camera's name (``observation.images.<name>`` in a dataset).
        width, height: image size (pixels).
        fps: capture rate (Hz).
        seed: seed of the noise pattern.
        fail_after: stop delivering after this many frames (for failure tests); None never.
    """

    def __init__(self, name: str = "synthetic", width: int = 640, height: int = 480,
                 fps: float = 30.0, seed: int = 0, fail_after: int | None = None):
        self.name, self.width, self.height, self.fps = name, width, height, fps
        self.fail_after = fail_after
        self.frames = 0
        self.dropped = 0
        rng = np.random.default_rng(seed)
        x = np.linspace(0, 255, 2 * width, dtype=np.float32)
        y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
        self._base = np.stack([np.broadcast_to(x, (height, 2 * width)),
                               np.broadcast_to(y, (height, 2 * width)),
                               (x[None, :] + y) / 2 % 256], axis=-1).astype(np.uint8)
        self._noise = rng.integers(0, 12, (_NOISE_FRAMES, height, width, 3), dtype=np.uint8)
        self._t0: float | None = None
        self._next = 0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._next = 0

    def read(self, timeout_s: float = 1.0) -> Frame:
        """The next frame: waits for its capture time, or, when late, returns the newest one.

        Raises:
            CameraError: not started, or ``fail_after`` frames were delivered (waits ``timeout_s``
                first, as a stalled device does).
        """
        if self._t0 is None:
            raise CameraError(f"camera {self.name!r}: start() it first")
        if self.fail_after is not None and self.frames >= self.fail_after:
            time.sleep(timeout_s)
            raise CameraError(f"camera {self.name!r} delivered no frame for {timeout_s:.1f} s")
        period = 1.0 / self.fps
        newest = int((time.monotonic() - self._t0) / period)
        if newest > self._next:
            self.dropped += newest - self._next
            self._next = newest
        stamp = self._t0 + self._next * period
        time.sleep(max(0.0, stamp - time.monotonic()))
        k = self._next
        shift = (4 * k) % self.width
        image = self._base[:, shift : shift + self.width] + self._noise[k % _NOISE_FRAMES]
        self._next += 1
        self.frames += 1
        return Frame(image, stamp, k)

    def stop(self) -> None:
        self._t0 = None
