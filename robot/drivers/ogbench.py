"""Simulated robot driver: an OGBench manipulation env (UR5e + Robotiq 2F-85) stepped one 50 ms
control period per server tick.

Tasks: ``task1``..``task5`` are OGBench's evaluation goals (each episode publishes the goal in
``observation.goal`` and ``observation.goal_images.<camera>``, ends at success or at OGBench's
horizon); ``play`` starts from a random scene with no goal (goal features are zeros, success is
never reported) and runs for a fixed number of steps, as OGBench's play data does. The reset seed
names the initial state exactly. ``hold()`` sends the zero action: the relative commands keep the
end effector and the gripper opening where they are.
"""

from __future__ import annotations

import numpy as np

from tether.robot.driver import Observation, Robot, check_reset_args
from tether.robot.spec import RobotSpec


class OGBenchRobot(Robot):
    """An OGBench env as a robot.

    Args:
        env: ``scene`` or ``cube-single``.
        cameras: scene cameras to render each tick (``front_pixels``, ``front``).
        image_size: camera resolution in pixels (square).
        play_steps: length of a ``play`` episode in control ticks (OGBench's play data: 1000).
        eval_steps: horizon of evaluation episodes; None: OGBench's (200 cube-single, 750 scene).

    Raises:
        tether.sim.ogbench.UnknownEnvError: an env tether does not serve (lists them).
        tether.sim.ogbench.OGBenchNotInstalledError: ``pip install 'tether[ogbench]'``.
    """

    def __init__(self, env: str, cameras: tuple[str, ...] = ("front_pixels",), image_size: int = 64,
                 play_steps: int = 1000, eval_steps: int | None = None):
        from tether.sim.ogbench import OGBenchSim

        self.sim = OGBenchSim(env, tuple(cameras), image_size, play_steps, eval_steps)
        self.spec: RobotSpec = self.sim.spec
        self._last: Observation | None = None

    def connect(self) -> None:
        for kind in ("eval", "play"):  # build both envs now, not in the middle of a tick
            self.sim.build(kind)

    def reset(self, task: str | None, seed: int | None) -> Observation:
        check_reset_args(self.spec, task, seed)
        values = self.sim.reset(task or self.spec.tasks[0], 0 if seed is None else seed)
        self._last = Observation(values)
        return self._last

    def act(self, action: np.ndarray) -> None:
        values, success, truncated = self.sim.step(np.asarray(action, dtype=np.float32))
        self._last = Observation(values, reward=float(success), success=success,
                                 terminated=success, truncated=truncated)

    def hold_action(self) -> np.ndarray:
        return np.zeros(5, dtype=np.float32)

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
