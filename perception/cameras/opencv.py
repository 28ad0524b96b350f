"""OpenCV cameras (V4L2 devices, video files, network streams) captured in their own thread."""

from __future__ import annotations

import logging
import threading
import time

import cv2
import numpy as np

from tether.perception.cameras.base import CameraError, Frame, ThreadedCamera

log = logging.getLogger(__name__)


class OpenCVCamera(ThreadedCamera):
    """Capture ``source`` (device index, device path, file path or URL) in a background thread.

    Args:
        source: what ``cv2.VideoCapture`` opens, e.g. ``0``, ``"/dev/video2"``, ``"rtsp://..."``.
        name: the camera's name in errors and datasets (``observation.images.<name>``).
        width, height, fps: requested capture settings (None keeps the device's); a file is
            played back at ``fps`` (its own rate when None), like a live camera.
        loop: restart a file at its end instead of stopping.

    ``read()`` returns the newest frame (older ones are dropped, and counted in ``dropped``).
    """

    def __init__(
        self,
        source: int | str,
        name: str = "camera",
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        loop: bool = False,
    ):
        self.source, self.name = source, name
        self.width, self.height, self.fps, self.loop = width, height, fps, loop
        self._cap: cv2.VideoCapture | None = None
        super().__init__()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _describe(self) -> str:
        return f"camera {self.name!r} ({self.source})"

    def start(self) -> None:
        cap = cv2.VideoCapture(self.source)
        if not cap.isOpened():
            raise CameraError(f"{self._describe()} could not be opened: is it connected, and "
                              "is the index, path or URL right?")
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        is_file = isinstance(self.source, str) and cap.get(cv2.CAP_PROP_FRAME_COUNT) > 0
        rate = self.fps or cap.get(cv2.CAP_PROP_FPS) or 30.0
        self._period = 1.0 / rate if is_file else 0.0  # a device paces itself
        self._cap = cap
        self._stop.clear()
        self._buffer.restart()  # a camera started again after its stream ended delivers again
        self._thread = threading.Thread(target=self._capture, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def _capture(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            ok, bgr = self._cap.read()
            stamp = time.monotonic()
            if not ok:
                if self.loop and self._period:
                    self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                self._buffer.end("stopped delivering frames")
                return
            image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            self._buffer.put(Frame(np.ascontiguousarray(image), stamp, self._buffer.frames))
            if self._period:
                next_t += self._period
                time.sleep(max(0.0, next_t - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None
