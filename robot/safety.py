"""The safety layer between every client and the driver: limits from the robot spec, applied to
every command before it reaches the robot.

Order of checks for one command (shape/dtype/finiteness/limits come from ``Feature.validate``):

1. reject: wrong shape or dtype, NaN/inf, outside the action's position limits (``low``/``high``);
2. clip: the change from the last applied action to ``max_delta_per_tick`` (a slew-rate limit,
   as polymetis and deoxys bound the step of a target); the first command of an episode is
   measured from the driver's ``hold_action()`` (the action that keeps the robot still);
3. clip: end-effector displacement that would leave the workspace box (delta actions only).

Rejections drop the command (the robot holds); clips change it and are counted. The limits are
part of the spec (``SafetySpec``), so a dataset, a policy and the robot agree on them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from tether.robot.spec import RobotSpec, SpecError


class SafetyViolation(SpecError):
    """A command that the safety layer refuses (the message says which limit)."""


@dataclass
class SafetyFilter:
    """Apply the spec's limits to commands: ``check`` on arrival (reject), ``limit`` when applied
    (clip); ``counts`` tallies rejections and clips by reason."""

    spec: RobotSpec

    def __post_init__(self) -> None:
        self.counts: Counter = Counter()
        safety = self.spec.safety
        self._max_delta = None if safety.max_delta_per_tick is None else np.asarray(
            safety.max_delta_per_tick, np.float32)
        self._ws_low = None if safety.workspace_low is None else np.asarray(safety.workspace_low)
        self._ws_high = None if safety.workspace_high is None else np.asarray(safety.workspace_high)
        state = self.spec.observation.get("observation.state")
        self._ee_index = None
        if self._ws_low is not None:
            names = list(state.names or ()) if state is not None else []
            missing = [n for n in safety.ee_state_names if n not in names]
            if missing or safety.ee_action_axes is None:
                raise SpecError(
                    f"workspace limits need ee_state_names in observation.state (missing {missing}) "
                    "and ee_action_axes"
                )
            self._ee_index = [names.index(n) for n in safety.ee_state_names]
            self._ee_axes = list(safety.ee_action_axes)

    def check(self, action) -> np.ndarray:
        """Validate a command on arrival; returns it as an array of the spec's dtype.

        Raises:
            SafetyViolation: wrong shape or dtype, NaN/inf, or outside the position limits.
        """
        try:
            return self.spec.action.validate("action", action)
        except SpecError as e:
            text = str(e)
            reason = "non_finite" if "NaN" in text else "out_of_limits" if "limit" in text else "bad_shape"
            self.counts[reason] += 1
            raise SafetyViolation(text) from e

    def limit(
        self,
        action: np.ndarray,
        last_applied: np.ndarray | None,
        observation: dict[str, np.ndarray] | None,
    ) -> np.ndarray:
        """Clip a checked action at the tick it is applied.

        Args:
            action: output of ``check``.
            last_applied: the action applied on the previous tick (None at an episode start).
            observation: the latest observation (for the workspace check).
        """
        if self._max_delta is not None and last_applied is not None:
            step = np.clip(action - last_applied, -self._max_delta, self._max_delta)
            if np.any(step != action - last_applied):
                self.counts["rate_limited"] += 1
                action = (last_applied + step).astype(action.dtype)
        if self._ee_index is not None and observation is not None:
            ee = np.asarray(observation["observation.state"])[self._ee_index]
            push = action[self._ee_axes]
            blocked = ((ee >= self._ws_high) & (push > 0)) | ((ee <= self._ws_low) & (push < 0))
            if np.any(blocked):
                self.counts["workspace_clipped"] += 1
                action = action.copy()
                action[np.asarray(self._ee_axes)[blocked]] = 0.0
        return action
