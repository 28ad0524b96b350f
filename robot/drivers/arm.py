"""Simulated robot driver: tether's OpenMANIPULATOR-X tasks (``tether.sim.arm``), one 20 ms control
period per server tick (50 Hz).

The robot server paces it in real time and it reports the task's dense reward and success, like the
MetaWorld driver. All tasks share one MuJoCo scene (one ``MjModel``, one ``MjData``); a reset draws
the named task's initial condition from the seed. ``hold()`` keeps the position targets where they
are (ee_delta: a zero displacement; joint: the current targets).
"""

from __future__ import annotations

import numpy as np

from tether.robot.driver import Observation, Robot
from tether.robot.spec import RobotSpec


class ArmRobot(Robot):
    """The simulated OpenMANIPULATOR-X, resettable to any of ``tasks``.

    Args:
        tasks: arm task names (``"reach"``, ``"push"``); the first is the default at reset.
        action_mode: ``"ee_delta"`` (m per tick, (3,)) or ``"joint"`` (rad, (4,)).
        max_episode_steps: truncation horizon in control ticks (default: each task's own).
        terminate_on_success: end the episode at the first tick the task is achieved.
        cameras: scene cameras to render each tick (``"front"``, ``"top"``).
        image_size: camera resolution in pixels (square).

    Raises:
        tether.sim.arm.UnknownTaskError: an unknown task or action mode.
    """

    def __init__(
        self,
        tasks: tuple[str, ...] = ("reach", "push"),
        action_mode: str = "ee_delta",
        max_episode_steps: int | None = None,
        terminate_on_success: bool = True,
        cameras: tuple[str, ...] = (),
        image_size: int = 128,
    ):
        from tether.sim import arm

        self._arm = arm
        self.spec: RobotSpec = arm.arm_spec(tuple(tasks), action_mode, tuple(cameras), image_size)
        self.action_mode = action_mode
        self.max_episode_steps = max_episode_steps
        self.terminate_on_success = terminate_on_success
        self.cameras = tuple(cameras)
        self.image_size = image_size
        self._tasks: dict = {}
        self._cams: list = []
        self._task = None
        self._last: Observation | None = None

    def connect(self) -> None:
        from tether.sim.render import OffscreenCamera

        scene = self._arm.Scene.load()
        for name in self.spec.tasks:  # build everything now, not in the middle of a tick
            self._tasks[name] = self._arm.ArmTask(
                name, self.action_mode, self.max_episode_steps, scene=scene
            )
        self._cams = [
            OffscreenCamera(scene.model, cam, self.image_size, self.image_size) for cam in self.cameras
        ]

    def _observation(self, state: np.ndarray, **kw) -> Observation:
        values = {"observation.state": state}
        for cam in self._cams:
            values[f"observation.images.{cam.camera}"] = cam.render(self._task.data)
        return Observation(values, **kw)

    def reset(self, task: str | None, seed: int | None) -> Observation:
        name = task or self.spec.tasks[0]
        if name not in self.spec.tasks:
            raise ValueError(f"task {name!r} is not served by this robot: {list(self.spec.tasks)}")
        if not self._tasks:
            self.connect()
        self._task = self._tasks[name]
        state = self._task.reset(0 if seed is None else seed)
        self._last = self._observation(state)
        return self._last

    def act(self, action: np.ndarray) -> None:
        self._step(np.asarray(action, dtype=np.float32))

    def hold_action(self) -> np.ndarray | None:
        if self._task is None:
            return None
        return self._task.hold_action()

    def hold(self) -> np.ndarray | None:
        action = self.hold_action()
        if action is not None:
            self._step(action)
        return action

    def _step(self, action: np.ndarray) -> None:
        if self._task is None:
            raise RuntimeError("reset() before act()")
        r = self._task.step(action)
        terminated = r.success and self.terminate_on_success
        self._last = self._observation(
            r.state, reward=r.reward, success=r.success, terminated=terminated, truncated=r.truncated
        )

    def observe(self) -> Observation:
        if self._last is None:
            raise RuntimeError("reset() before observe()")
        return self._last

    def disconnect(self) -> None:
        for cam in self._cams:
            cam.close()
        self._cams = []
        self._tasks.clear()
        self._task = None
