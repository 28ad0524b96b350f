"""The safety layer between every client and the driver: limits from the robot spec, applied to
every command before it reaches the robot.

Order of checks for one command (shape/dtype/finiteness/limits come from ``Feature.validate``):

1. reject: wrong shape, a dtype of another kind than the spec's (an integer or bool array for a
   float action), NaN/inf, outside the action's position limits (``low``/``high``);
2. clip: the change from the last applied action to ``max_delta_per_tick`` (a slew-rate limit,
   as polymetis and deoxys bound the step of a target); the first command of an episode is
   measured from the driver's ``hold_action()`` (the action that keeps the robot still);
3. clip: the same change to ``max_velocity`` x the loop's period (a velocity limit in units/s,
   as libfranka's ``limitRate`` bounds commanded joint velocities), whatever rate the loop runs;
4. clip: the end effector to the workspace box: a delta action is zeroed on each axis where it
   pushes further out, an absolute target is clipped into the box.

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
    (clip); ``counts`` tallies rejections and clips by reason.

    Args:
        spec: the robot's spec; its ``safety`` holds the limits.
        period_s: the control loop's period (s), for ``max_velocity``; default the spec's.

    Raises:
        SpecError: workspace limits without the end-effector names and axes they need, or limits
            whose length is not the action's.
    """

    spec: RobotSpec
    period_s: float | None = None

    def __post_init__(self) -> None:
        self.counts: Counter = Counter()
        safety = self.spec.safety
        n = int(np.prod(self.spec.action.shape))
        period = self.spec.period_s if self.period_s is None else self.period_s
        for name in ("max_delta_per_tick", "max_velocity"):
            value = getattr(safety, name)
            if value is not None and len(value) != n:
                raise SpecError(f"safety.{name} has {len(value)} entries for an action of {n}")
        self._max_delta = None if safety.max_delta_per_tick is None else np.asarray(
            safety.max_delta_per_tick, np.float32)
        self._max_step = None if safety.max_velocity is None else (
            np.asarray(safety.max_velocity, np.float64) * period).astype(np.float32)
        self._absolute_ee = safety.ee_action_kind == "absolute"
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
            sizes = {len(self._ws_low), len(self._ws_high if self._ws_high is not None else ()),
                     len(self._ee_index), len(self._ee_axes)}
            if len(sizes) != 1 or not all(0 <= i < n for i in self._ee_axes):
                raise SpecError("workspace_low, workspace_high, ee_state_names and ee_action_axes need one "
                                f"entry per axis, and the axes must be action elements (0..{n - 1})")

    def check(self, action) -> np.ndarray:
        """Validate a command on arrival; returns it as an array of the spec's dtype.

        Raises:
            SafetyViolation: wrong shape or dtype, NaN/inf, or outside the position limits.
        """
        expected = np.dtype(self.spec.action.dtype)
        dtype = getattr(action, "dtype", None)
        if dtype is not None and dtype.kind != expected.kind:
            # same_kind casting would apply an int or bool array to a float action: refused
            self.counts["bad_dtype"] += 1
            raise SafetyViolation(f"action: dtype {dtype}, expected {expected.kind!r}-kind like {expected}")
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
            observation: the latest observation (for the workspace check of delta actions).

        Returns:
            The action to apply (``action`` itself when no limit changed it).
        """
        if last_applied is not None:
            for bound, reason in ((self._max_delta, "rate_limited"), (self._max_step, "velocity_limited")):
                if bound is None:
                    continue
                step = np.clip(action - last_applied, -bound, bound)
                if np.any(step != action - last_applied):
                    self.counts[reason] += 1
                    action = (last_applied + step).astype(action.dtype)
        if self._ee_index is not None and self._absolute_ee:
            target = action[self._ee_axes]
            inside = np.clip(target, self._ws_low, self._ws_high)
            if np.any(inside != target):
                self.counts["workspace_clipped"] += 1
                action = action.copy()
                action[self._ee_axes] = inside
        elif self._ee_index is not None and observation is not None:
            ee = np.asarray(observation["observation.state"])[self._ee_index]
            push = action[self._ee_axes]
            blocked = ((ee >= self._ws_high) & (push > 0)) | ((ee <= self._ws_low) & (push < 0))
            if np.any(blocked):
                self.counts["workspace_clipped"] += 1
                action = action.copy()
                action[np.asarray(self._ee_axes)[blocked]] = 0.0
        return action
