"""Simulated robot driver: MetaWorld v3 tasks stepped one control period per server tick.

It is the stand-in for hardware in ``tether demo``: the server paces it in real time at 80 Hz and
it reports the simulator's reward and success. ``hold()`` keeps the end effector still and the
gripper effort unchanged (so a grasped object is not dropped).
"""

from __future__ import annotations

import numpy as np

from tether.robot.driver import Observation, Robot, check_reset_args
from tether.robot.spec import RobotSpec

# MetaWorld's corner cameras are mounted upside down in its MJCF: their frames are rotated 180°.
_UPSIDE_DOWN = {"corner", "corner2", "corner3"}


class MetaWorldRobot(Robot):
    """A Sawyer arm in MetaWorld that can be reset to any of ``tasks``.

    Args:
        tasks: v3 task names this robot serves (the first is the default at reset).
        max_episode_steps: truncation horizon in control ticks.
        terminate_on_success: end the episode at the first tick the task is achieved.
        cameras: MetaWorld camera names to render each tick (e.g. ``("corner",)``).
        image_size: camera resolution in pixels (square).

    Raises:
        tether.sim.metaworld.UnknownTaskError: a task name MetaWorld does not have.
    """

    def __init__(
        self,
        tasks: tuple[str, ...],
        max_episode_steps: int = 500,
        terminate_on_success: bool = True,
        cameras: tuple[str, ...] = (),
        image_size: int = 128,
    ):
        from tether.sim import metaworld

        metaworld.check_tasks(tasks)
        self._mw = metaworld
        self.spec: RobotSpec = metaworld.metaworld_spec(tuple(tasks), tuple(cameras), image_size)
        self.max_episode_steps = max_episode_steps
        self.terminate_on_success = terminate_on_success
        self.cameras = tuple(cameras)
        self.image_size = image_size
        self._envs: dict = {}
        self._cams: dict = {}
        self._task = None
        self._last: Observation | None = None
        self._gripper = 0.0

    def connect(self) -> None:
        for task in self.spec.tasks:  # build every scene now, not in the middle of a tick
            self._env(task)

    def _env(self, task: str):
        if task not in self._envs:
            from tether.sim.render import OffscreenCamera

            env = self._mw.MetaWorldTask(task, self.max_episode_steps)
            self._envs[task] = env
            self._cams[task] = [
                OffscreenCamera(env.model, cam, self.image_size, self.image_size)
                for cam in self.cameras
            ]
        return self._envs[task]

    def _observation(self, state: np.ndarray, **kw) -> Observation:
        values = {"observation.state": state}
        for cam in self._cams[self._task.name]:
            image = cam.render(self._task.data)
            if cam.camera in _UPSIDE_DOWN:
                image = np.ascontiguousarray(image[::-1, ::-1])
            values[f"observation.images.{cam.camera}"] = image
        return Observation(values, **kw)

    def reset(self, task: str | None, seed: int | None) -> Observation:
        check_reset_args(self.spec, task, seed)
        name = task or self.spec.tasks[0]
        self._task = self._env(name)
        self._gripper = 0.0
        state = self._task.reset(0 if seed is None else seed)
        self._last = self._observation(state)
        return self._last

    def act(self, action: np.ndarray) -> None:
        self._step(np.asarray(action, dtype=np.float32))

    def hold_action(self) -> np.ndarray:
        return np.array([0.0, 0.0, 0.0, self._gripper], dtype=np.float32)

    def hold(self) -> np.ndarray:
        action = self.hold_action()
        self._step(action)
        return action

    def _step(self, action: np.ndarray) -> None:
        if self._task is None:
            raise RuntimeError("reset() before act()")
        self._gripper = float(action[3])
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
        for cams in self._cams.values():
            for cam in cams:
                cam.close()
        self._envs.clear()
        self._cams.clear()
