"""The result of one control period of a simulated task, shared by tether's MuJoCo tasks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class StepResult:
    """One control period of a task's ``step``.

    Attributes:
        state: the task's ``observation.state`` after the period, float32 of the spec's shape
            (``tether.sim.arm``: (17,); ``tether.sim.metaworld``: (39,)).
        reward: the task's reward for the period (units and shaping in the task's module).
        success: whether the task's success criterion holds after the period.
        truncated: whether the episode hit its step limit (``max_episode_steps``).
    """

    state: np.ndarray
    reward: float
    success: bool
    truncated: bool
