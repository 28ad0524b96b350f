"""Simulated robot driver: an OCBench block env (UR5e + Robotiq 2F-85, CPU MuJoCo) stepped one
control period per server tick (10 Hz lite, 50 Hz full; see ``tether.sim.ocbench``).

Tasks are OCBench's (``task1``, ``task2``): the reset seed names the initial state exactly; an
episode ends at success, failure or an unhealthy state (OCBench's termination) or at the task's
step limit. ``hold()`` sends the zero action: joint-position deltas of zero keep the arm and the
gripper where they are.
"""

from __future__ import annotations

import numpy as np

from tether.robot.driver import Observation, Robot, check_reset_args
from tether.robot.spec import RobotSpec


class OCBenchRobot(Robot):
    """An OCBench env as a robot.

    Args:
        env: a key of ``tether.sim.ocbench.ENVS`` (e.g. ``block-lite-double``).
        cameras: scene cameras to render each tick (``front_pixels``, ``front``, ``side``).
        image_size: camera resolution in pixels (square).
        max_episode_steps: step limit; None: OCBench's per task.

    Raises:
        tether.sim.ocbench.UnknownEnvError: an env tether does not serve (lists them).
        tether.sim.ocbench.OCBenchNotInstalledError: ``pip install 'tether[ocbench]'``.
    """

    def __init__(self, env: str, cameras: tuple[str, ...] = ("front_pixels",), image_size: int = 64,
                 max_episode_steps: int | None = None):
        from tether.sim.ocbench import OCBenchSim

        self.sim = OCBenchSim(env, tuple(cameras), image_size, max_episode_steps)
        self.spec: RobotSpec = self.sim.spec
        self._last: Observation | None = None

    def connect(self) -> None:
        pass  # the env is built (and compiled) in __init__

    def reset(self, task: str | None, seed: int | None) -> Observation:
        check_reset_args(self.spec, task, seed)
        values = self.sim.reset(task or self.spec.tasks[0], 0 if seed is None else seed)
        self._last = Observation(values)
        return self._last

    def act(self, action: np.ndarray) -> None:
        values, success, done = self.sim.step(np.asarray(action, dtype=np.float32))
        self._last = Observation(values, reward=float(success), success=success,
                                 terminated=done and self.sim.steps < self.sim.limit,
                                 truncated=done and self.sim.steps >= self.sim.limit)

    def hold_action(self) -> np.ndarray:
        return np.zeros(7, dtype=np.float32)

    def hold(self) -> np.ndarray:
        action = self.hold_action()
        self.act(action)
        return action

    def observe(self) -> Observation:
        if self._last is None:
            raise RuntimeError("reset() before observe()")
        return self._last

    def disconnect(self) -> None:
        self.sim.close()
