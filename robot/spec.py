"""The robot spec: one description of a robot's observation and action spaces.

The same spec travels in the protocol handshake, in a dataset's ``meta/info.json`` and in an
ONNX policy's metadata; every consumer checks it (``RobotSpec.check_policy``) before it moves a
robot. Feature keys follow LeRobot's naming (``observation.state``, ``observation.images.<cam>``,
``action``) so a dataset's features are the spec's features.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


class SpecError(ValueError):
    """A value does not fit its feature (wrong shape, dtype, non-finite, out of limits)."""


class SpecMismatchError(ValueError):
    """Two specs (e.g. a policy's and a robot's) disagree; the message lists every difference."""


@dataclass(frozen=True)
class Feature:
    """One array-valued observation or action.

    Attributes:
        dtype: numpy dtype name, e.g. ``"float32"`` or ``"uint8"`` (images, HxWxC).
        shape: array shape, e.g. ``(39,)`` or ``(128, 128, 3)``.
        names: one name per element of a vector feature (None for images).
        unit: physical unit of the values ("m", "rad", "m/s", "normalized", "pixel").
        low, high: per-element limits (same length as ``names``), or None when unbounded.
    """

    dtype: str
    shape: tuple[int, ...]
    names: tuple[str, ...] | None = None
    unit: str = ""
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        np.dtype(self.dtype)  # raises TypeError on an unknown dtype
        for attr in ("names", "low", "high"):
            value = getattr(self, attr)
            if value is not None:
                object.__setattr__(self, attr, tuple(value))
                if len(value) != int(np.prod(self.shape)):
                    raise SpecError(f"{attr} has {len(value)} entries for shape {self.shape}")

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3 and self.dtype == "uint8"

    def validate(self, key: str, value: Any) -> np.ndarray:
        """Return ``value`` as an array of this feature's dtype, or raise ``SpecError``.

        Checks the shape exactly, the dtype kind (no silent float -> int casts), finiteness for
        floats and the limits when the feature has them.
        """
        array = np.asarray(value)
        if array.shape != self.shape:
            raise SpecError(f"{key}: shape {array.shape}, expected {self.shape}")
        expected = np.dtype(self.dtype)
        if array.dtype != expected:
            if not np.can_cast(array.dtype, expected, casting="same_kind"):
                raise SpecError(f"{key}: dtype {array.dtype}, expected {expected}")
            array = array.astype(expected)
        if expected.kind == "f":
            if not np.all(np.isfinite(array)):
                raise SpecError(f"{key}: contains NaN or inf")
            if self.low is not None and np.any(array < np.asarray(self.low, dtype=expected)):
                raise SpecError(f"{key}: below its lower limit {self.low}")
            if self.high is not None and np.any(array > np.asarray(self.high, dtype=expected)):
                raise SpecError(f"{key}: above its upper limit {self.high}")
        return array

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        for k in ("names", "low", "high"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Feature:
        try:
            return cls(
                dtype=str(d["dtype"]),
                shape=tuple(d["shape"]),
                names=tuple(d["names"]) if d.get("names") is not None else None,
                unit=str(d.get("unit", "")),
                low=tuple(float(x) for x in d["low"]) if d.get("low") is not None else None,
                high=tuple(float(x) for x in d["high"]) if d.get("high") is not None else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SpecError(f"malformed feature description {d!r}: {e}") from e


@dataclass(frozen=True)
class SafetySpec:
    """Limits the safety layer (``tether.robot.safety``) applies to every command.

    Attributes:
        max_delta_per_tick: per action element, the largest change from the previously applied
            action in one control tick (action units), or None.
        workspace_low, workspace_high: end-effector box (m) in the frame of the state's
            ``ee_state_names``; commands that push further out on an axis are zeroed on it.
        ee_state_names: names in ``observation.state`` of the end-effector x, y, z (m).
        ee_action_axes: action elements that move the end effector along x, y, z (delta actions).
    """

    max_delta_per_tick: tuple[float, ...] | None = None
    workspace_low: tuple[float, ...] | None = None
    workspace_high: tuple[float, ...] | None = None
    ee_state_names: tuple[str, ...] = ()
    ee_action_axes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for attr in ("max_delta_per_tick", "workspace_low", "workspace_high", "ee_action_axes"):
            if getattr(self, attr) is not None:
                object.__setattr__(self, attr, tuple(getattr(self, attr)))
        object.__setattr__(self, "ee_state_names", tuple(self.ee_state_names))

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SafetySpec:
        try:
            return cls(**d)
        except TypeError as e:
            raise SpecError(f"malformed safety spec {d!r}: {e}") from e


@dataclass(frozen=True)
class RobotSpec:
    """A robot's interface: what it observes, what it accepts, how fast it runs.

    Attributes:
        robot_type: a name for the embodiment, e.g. ``"metaworld-sawyer"``.
        control_rate_hz: the rate of the server's control loop (Hz); one action per tick.
        observation: feature key -> Feature (``observation.state``, ``observation.images.*``).
        action: the command the robot accepts each tick.
        tasks: task names the robot can be reset to (a simulator's tasks; empty for hardware).
        safety: the limits applied to every command (the robot's own; policies need not match).
    """

    robot_type: str
    control_rate_hz: float
    observation: dict[str, Feature]
    action: Feature
    tasks: tuple[str, ...] = field(default=())
    safety: SafetySpec = field(default_factory=SafetySpec)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.control_rate_hz <= 0:
            raise SpecError(f"control_rate_hz must be positive, got {self.control_rate_hz}")
        for key in self.observation:
            if not key.startswith("observation."):
                raise SpecError(f"observation key {key!r} must start with 'observation.'")

    @property
    def period_s(self) -> float:
        """Control period in seconds."""
        return 1.0 / self.control_rate_hz

    def to_dict(self) -> dict[str, Any]:
        return {
            "robot_type": self.robot_type,
            "control_rate_hz": self.control_rate_hz,
            "observation": {k: f.to_dict() for k, f in self.observation.items()},
            "action": self.action.to_dict(),
            "tasks": list(self.tasks),
            "safety": self.safety.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RobotSpec:
        """Parse a spec dict; raises ``SpecError`` naming what is malformed."""
        if not isinstance(d, dict):
            raise SpecError(f"a robot spec must be a mapping, got {type(d).__name__}")
        try:
            return cls(
                robot_type=str(d["robot_type"]),
                control_rate_hz=float(d["control_rate_hz"]),
                observation={str(k): Feature.from_dict(v) for k, v in d["observation"].items()},
                action=Feature.from_dict(d["action"]),
                tasks=tuple(str(t) for t in d.get("tasks", ())),
                safety=SafetySpec.from_dict(d.get("safety") or {}),
            )
        except (KeyError, AttributeError, TypeError) as e:
            raise SpecError(f"malformed robot spec: missing or bad field {e}") from e

    @classmethod
    def from_json(cls, text: str) -> RobotSpec:
        return cls.from_dict(json.loads(text))

    def check_policy(self, policy: RobotSpec, tasks: tuple[str, ...] | None = None) -> None:
        """Check that a policy trained for ``policy`` can drive this robot.

        The policy may use a subset of the robot's observations, but each one it uses must match
        exactly (dtype, shape, names, unit); the action and the control rate must match, and the
        policy's tasks (or ``tasks``) must be tasks this robot knows, when the robot lists tasks.

        Raises:
            SpecMismatchError: listing every difference, one per line.
        """
        problems: list[str] = []
        if policy.robot_type != self.robot_type:
            problems.append(f"robot_type: policy {policy.robot_type!r}, robot {self.robot_type!r}")
        if not np.isclose(policy.control_rate_hz, self.control_rate_hz):
            problems.append(
                f"control_rate_hz: policy {policy.control_rate_hz:g}, robot {self.control_rate_hz:g}"
            )
        for key, feature in policy.observation.items():
            mine = self.observation.get(key)
            if mine is None:
                problems.append(f"{key}: the policy needs it, the robot does not provide it")
            else:
                problems.extend(_feature_differences(key, feature, mine))
        problems.extend(_feature_differences("action", policy.action, self.action, limits=True))
        wanted = policy.tasks if tasks is None else tasks
        if self.tasks:
            missing = [t for t in wanted if t not in self.tasks]
            if missing:
                problems.append(f"tasks {missing} are not among the robot's {list(self.tasks)}")
        if problems:
            raise SpecMismatchError("spec mismatch:\n  " + "\n  ".join(problems))


def _feature_differences(key: str, want: Feature, have: Feature, limits: bool = False) -> list[str]:
    out = []
    for attr in ("dtype", "shape", "names", "unit") + (("low", "high") if limits else ()):
        a, b = getattr(want, attr), getattr(have, attr)
        if a != b:
            out.append(f"{key}.{attr}: policy {a}, robot {b}")
    return out
