"""A 2-D point mass integrated in numpy: a driver with no simulator dependency, used to test and
benchmark the robot link at high control rates.

State: position (m) and velocity (m/s); action: velocity command (m/s) in [-1, 1] per axis,
reached with a first-order lag; the task ``reach-origin`` succeeds within 2 cm of the origin.
"""

from __future__ import annotations

import numpy as np

from tether.robot.driver import Observation, Robot, check_reset_args
from tether.robot.spec import Feature, RobotSpec

TASK = "reach-origin"


def pointmass_spec(rate_hz: float = 100.0) -> RobotSpec:
    """Spec of the point mass: ``observation.state`` = (x, y, vx, vy), action = (vx, vy)."""
    return RobotSpec(
        "pointmass",
        rate_hz,
        {"observation.state": Feature("float32", (4,), ("x", "y", "vx", "vy"), "m|m/s")},
        Feature("float32", (2,), ("vx", "vy"), "m/s", low=(-1.0, -1.0), high=(1.0, 1.0)),
        tasks=(TASK,),
    )


class PointMassRobot(Robot):
    """Point mass driver.

    Args:
        rate_hz: control rate (Hz); each tick integrates 1 / rate_hz s.
        max_episode_steps: truncation horizon in ticks.
        time_constant_s: lag of the velocity response (s).
    """

    def __init__(self, rate_hz: float = 100.0, max_episode_steps: int = 1000, time_constant_s: float = 0.05):
        self.spec = pointmass_spec(rate_hz)
        self.dt = 1.0 / rate_hz
        self.max_episode_steps = max_episode_steps
        self.alpha = min(1.0, self.dt / time_constant_s)
        self.state = np.zeros(4, np.float32)
        self.steps = 0
        self.connected = False

    def connect(self) -> None:
        self.connected = True

    def reset(self, task: str | None, seed: int | None) -> Observation:
        check_reset_args(self.spec, task, seed)
        rng = np.random.default_rng(seed)
        self.state = np.concatenate([rng.uniform(-0.5, 0.5, 2), np.zeros(2)]).astype(np.float32)
        self.steps = 0
        return self.observe()

    def act(self, action: np.ndarray) -> None:
        self.state[2:] += self.alpha * (action - self.state[2:])
        self.state[:2] += self.dt * self.state[2:]
        self.steps += 1

    def hold_action(self) -> np.ndarray:
        return np.zeros(2, np.float32)

    def hold(self) -> np.ndarray:
        action = self.hold_action()
        self.act(action)
        return action

    def observe(self) -> Observation:
        success = bool(np.linalg.norm(self.state[:2]) < 0.02)
        return Observation(
            {"observation.state": self.state.copy()},
            reward=-float(np.linalg.norm(self.state[:2])),
            success=success,
            terminated=success,
            truncated=self.steps >= self.max_episode_steps,
        )

    def disconnect(self) -> None:
        self.connected = False
