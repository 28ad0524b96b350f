"""A driver wrapper that makes a simulator behave more like hardware: actuation latency, action
noise and observation noise (the sim as a stand-in for a real robot; domain randomization proper
lives in ``tether.sim``)."""

from __future__ import annotations

from collections import deque

import numpy as np

from tether.robot.driver import Observation, Robot


class PerturbedRobot(Robot):
    """Wrap ``robot``.

    Args:
        robot: the driver to wrap (its spec is this driver's spec).
        latency_ticks: an action takes effect this many control ticks after it is applied;
            meanwhile the wrapped robot holds.
        action_noise_std: Gaussian noise added to each action (action units), then clipped to
            the action limits.
        obs_noise_std: Gaussian noise added to ``observation.state`` (its units).
        seed: seed of the noise generator (reseeded from it at every reset).
    """

    def __init__(
        self,
        robot: Robot,
        latency_ticks: int = 0,
        action_noise_std: float = 0.0,
        obs_noise_std: float = 0.0,
        seed: int = 0,
    ):
        if latency_ticks < 0 or action_noise_std < 0 or obs_noise_std < 0:
            raise ValueError("latency and noise levels must be >= 0")
        self.robot = robot
        self.spec = robot.spec
        self.latency_ticks = latency_ticks
        self.action_noise_std = action_noise_std
        self.obs_noise_std = obs_noise_std
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._queue: deque[np.ndarray | None] = deque()
        feature = self.spec.action
        self._low = -np.inf if feature.low is None else np.asarray(feature.low, np.float32)
        self._high = np.inf if feature.high is None else np.asarray(feature.high, np.float32)

    def connect(self) -> None:
        self.robot.connect()

    def reset(self, task: str | None, seed: int | None) -> Observation:
        self._queue.clear()
        self._rng = np.random.default_rng([self.seed, 0 if seed is None else seed])
        return self._noisy(self.robot.reset(task, seed))

    def _push(self, action: np.ndarray | None) -> np.ndarray | None:
        self._queue.append(action)
        due = self._queue.popleft() if len(self._queue) > self.latency_ticks else None
        if due is None:
            return self.robot.hold()
        if self.action_noise_std > 0:
            noise = self._rng.normal(0.0, self.action_noise_std, due.shape)
            due = np.clip(due + noise, self._low, self._high).astype(due.dtype)
        self.robot.act(due)
        return due

    def act(self, action: np.ndarray) -> None:
        self._push(action)

    def hold_action(self) -> np.ndarray | None:
        return self.robot.hold_action()

    def hold(self) -> np.ndarray | None:
        # What reaches the robot now is an earlier command still in the pipe, or a hold.
        return self._push(None)

    def observe(self) -> Observation:
        return self._noisy(self.robot.observe())

    def _noisy(self, obs: Observation) -> Observation:
        if self.obs_noise_std > 0 and "observation.state" in obs.values:
            state = obs.values["observation.state"]
            noisy = state + self._rng.normal(0.0, self.obs_noise_std, state.shape)
            obs.values = {**obs.values, "observation.state": noisy.astype(state.dtype)}
        return obs

    def estop(self) -> None:
        self._queue.clear()  # commands in the pipe must not reach the robot after an e-stop
        self.robot.estop()

    def disconnect(self) -> None:
        self.robot.disconnect()
