"""The ``Robot`` driver interface that the robot server runs at its control rate.

A driver wraps one embodiment (a simulator, or an arm through its maker's SDK). The server calls,
once per control tick, either ``act(action)`` with a validated command or ``hold()`` when no new
command arrived, and then ``observe()``. Drivers never touch the network.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

from tether.robot.spec import RobotSpec


@dataclass
class Observation:
    """What a driver reports after a tick.

    Attributes:
        values: feature key -> array, matching the driver's ``spec.observation``.
        reward: the task reward of the last transition (0 on hardware without a reward source).
        success: whether the task is achieved (sim ground truth; False when unknown).
        terminated: the episode ended by the task (e.g. success with terminate-on-success).
        truncated: the episode hit its step limit.
    """

    values: dict[str, np.ndarray]
    reward: float = 0.0
    success: bool = False
    terminated: bool = False
    truncated: bool = False
    info: dict[str, float] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


class Robot(abc.ABC):
    """Abstract robot driver: connect, reset, act / hold, observe, disconnect."""

    spec: RobotSpec

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the connection to the hardware or simulator; raise if it is unreachable."""

    @abc.abstractmethod
    def reset(self, task: str | None, seed: int | None) -> Observation:
        """Start an episode (a simulator resets its scene; hardware moves to its home pose)."""

    @abc.abstractmethod
    def act(self, action: np.ndarray) -> None:
        """Apply one validated action (shape ``spec.action.shape``) for one control period."""

    @abc.abstractmethod
    def hold(self) -> np.ndarray | None:
        """Keep the robot where it is for one control period (no new command arrived).

        Returns the equivalent action when holding is expressible as one (so recordings stay
        complete), else None.
        """

    def hold_action(self) -> np.ndarray | None:
        """The action that keeps the robot where it is now, without applying it; the safety
        layer's reference for the first command of an episode. None when not expressible."""
        return None

    def estop(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Engage the hardware's own stop (brakes, stop category 1/2), at the first tick after the
        e-stop trips. The default does nothing more than the server does anyway: no command
        reaches the driver and ``hold()`` runs on every tick of an episode while it is latched."""

    @abc.abstractmethod
    def observe(self) -> Observation:
        """Read the current observation (after the last ``act``/``hold``)."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Release the hardware or simulator; the robot must be safe afterwards."""
