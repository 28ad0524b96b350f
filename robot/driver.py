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

MAX_SEED = 2**32 - 1  # numpy's legacy seeding and gymnasium take non-negative 32-bit seeds


def check_reset_args(spec: RobotSpec, task: object, seed: object) -> None:
    """Check a reset's arguments against the robot before any driver touches them: the task is
    None or one of ``spec.tasks`` (any name when the robot lists none, as hardware does), the
    seed None or an int in [0, 2**32 - 1].

    Raises:
        ValueError: naming the task and the robot's tasks, or the seed and its range.
    """
    if task is not None and (not isinstance(task, str) or (spec.tasks and task not in spec.tasks)):
        raise ValueError(f"unknown task {task!r}; this robot serves {list(spec.tasks)}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}] or null, got {seed!r}")


class RobotFault(Exception):
    """The robot stopped itself and the episode cannot go on, but the robot can be recovered
    without restarting the server (a Franka reflex: a collision, a joint limit, a
    discontinuous command). Raised by a driver's ``act`` / ``hold`` / ``observe``; the robot
    server then ends the episode (``done``), publishes ``fault: MESSAGE`` in that tick's
    ``events`` and runs on; the driver's next ``reset`` recovers (or raises, and the reset is
    refused with the reason). Any other driver exception stops the server."""


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
        """Start an episode (a simulator resets its scene; hardware moves to its home pose).

        Raises:
            ValueError: a task the robot does not serve, or a seed outside [0, 2**32 - 1]
                (``check_reset_args``).
        """

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
