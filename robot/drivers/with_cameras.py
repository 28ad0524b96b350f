"""A hardware driver plus cameras: every observation also carries each camera's newest frame.

This is how ``tether serve --robot feetech --cameras top=0`` publishes what a visuomotor policy
sees: the frames travel in the state messages as ``observation.images.<name>`` (uint8
[height, width, 3]), as a simulator's rendered cameras do, so ``tether eval --robot``, ``tether
collect`` and the recorder need nothing else. Each camera is read in its own thread into a
newest-frame slot; the control loop only copies the reference, so a slow or stalled camera never
costs a tick. A frame older than ``max_age_s`` is never published: the tick raises ``RobotFault``
(the server ends the episode and holds the arm, a policy must not act on a frozen view) and the
next reset restarts the camera, or is refused naming it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Sequence

import numpy as np

from tether.perception.cameras.base import Camera, CameraError, Frame
from tether.robot.driver import Observation, Robot, RobotFault
from tether.robot.recorder import camera_features

log = logging.getLogger(__name__)


class _Reader:
    """One camera read in a daemon thread; ``frame`` is the newest frame, ``error`` why it
    stopped."""

    def __init__(self, camera: Camera, timeout_s: float):
        self.camera, self.timeout_s = camera, timeout_s
        self.frame: Frame | None = None
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the camera and wait for its first frame.

        Raises:
            CameraError: it cannot be opened or gives no frame within ``timeout_s``.
        """
        self._stop.clear()
        try:
            self.camera.start()
            self.frame = self.camera.read(self.timeout_s)
        except Exception as e:
            self.error = e  # still stopped: the next reset tries again
            raise
        self.error = None
        self._thread = threading.Thread(target=self._run, name=f"serve-camera-{self.camera.name}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.frame = self.camera.read(self.timeout_s)
            except Exception as e:  # noqa: BLE001 - the tick names it; a driver's own type too
                if not self._stop.is_set():
                    self.error = e
                return

    def stop(self) -> None:
        """Stop the reader thread and release the camera."""
        self._stop.set()
        try:
            self.camera.stop()  # unblocks a read in progress
        finally:
            if self._thread is not None:
                self._thread.join(self.timeout_s + 1.0)
                self._thread = None


class CameraRobot(Robot):
    """``robot`` with ``cameras`` added to its observation.

    Args:
        robot: the driver (its spec, plus one ``observation.images.<name>`` feature per camera
            shaped like that camera's frames, is this driver's spec).
        cameras: ``tether.perception.cameras`` cameras, not started; each is started once here
            to learn its frame size (``camera_features``), and again at ``connect``.
        max_age_s: the oldest frame published (s, capture time to the tick on this machine's
            ``time.monotonic()`` clock); a camera with nothing newer faults the tick.

    Raises:
        ValueError: two cameras share a name, or a name that is already an observation.
        CameraError: a camera cannot be opened or gives no frame (names it).
    """

    def __init__(self, robot: Robot, cameras: Sequence[Camera], max_age_s: float = 0.5):
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0, got {max_age_s}")
        self.robot = robot
        self.spec = camera_features(robot.spec, cameras)
        self.max_age_s = max_age_s
        self._readers = {f"observation.images.{c.name}": _Reader(c, max(1.0, max_age_s))
                         for c in cameras}

    def connect(self) -> None:
        """Connect the arm, then start every camera (the arm is disconnected again when one
        cannot start)."""
        self.robot.connect()
        try:
            for reader in self._readers.values():
                reader.start()
        except BaseException:
            self.disconnect()
            raise

    def _frames(self) -> dict[str, np.ndarray]:
        """Each camera's newest frame, checked for age and shape.

        Raises:
            RobotFault: a camera stopped, or its newest frame is older than ``max_age_s`` or not
                the spec's shape (names the camera).
        """
        now = time.monotonic()
        images = {}
        for key, reader in self._readers.items():
            name = reader.camera.name
            if reader.error is not None:
                raise RobotFault(f"camera {name!r} stopped: {reader.error}")
            frame = reader.frame
            age = now - frame.timestamp
            if age > self.max_age_s:
                raise RobotFault(f"camera {name!r} gave no frame for {age:.2f} s "
                                 f"(> {self.max_age_s} s): a policy must not act on a frozen view")
            if frame.image.shape != self.spec.observation[key].shape:
                raise RobotFault(f"camera {name!r} delivers {frame.image.shape} frames, "
                                 f"not {self.spec.observation[key].shape} as when the server started")
            images[key] = frame.image
        return images

    def reset(self, task: str | None, seed: int | None) -> Observation:
        """Restart any camera that stopped (an unplugged and replugged USB camera comes back
        here), then reset the arm.

        Raises:
            CameraError: a stopped camera does not start again (the reset is refused naming it).
        """
        for reader in self._readers.values():
            if reader.error is not None:
                log.warning("restarting camera %r: %s", reader.camera.name, reader.error)
                reader.stop()
                reader.start()
        obs = self.robot.reset(task, seed)
        return self._with_frames(obs)

    def _with_frames(self, obs: Observation) -> Observation:
        return Observation({**obs.values, **self._frames()}, obs.reward, obs.success,
                           obs.terminated, obs.truncated, obs.info)

    def act(self, action: np.ndarray) -> None:
        self.robot.act(action)

    def hold(self) -> np.ndarray | None:
        return self.robot.hold()

    def hold_action(self) -> np.ndarray | None:
        return self.robot.hold_action()

    def estop(self) -> None:
        self.robot.estop()

    def observe(self) -> Observation:
        return self._with_frames(self.robot.observe())

    def disconnect(self) -> None:
        """Stop the cameras, then release the arm (always, even when a camera fails to stop)."""
        try:
            for reader in self._readers.values():
                try:
                    reader.stop()
                except Exception as e:  # noqa: BLE001 - the arm must still be released
                    log.error("camera %r did not stop cleanly: %s", reader.camera.name, e)
        finally:
            self.robot.disconnect()
