"""The robot spec: one description of a robot's observation and action spaces.

The same spec travels in the protocol handshake, in a dataset's ``meta/info.json`` and in an
ONNX policy's metadata; every consumer checks it (``RobotSpec.check_policy``) before it moves a
robot. Feature keys follow LeRobot's naming (``observation.state``, ``observation.images.<cam>``,
``action``) so a dataset's features are the spec's features.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np


# The dtypes a feature may have: those the wire protocol sends (``tether.robot.protocol``).
FEATURE_DTYPES = frozenset({"float32", "float64", "uint8", "uint16", "int32", "int64", "bool"})
_MAX_NDIM = 4
_MAX_DIM = 1 << 16  # elements along one axis (a 4K image is 3840 wide)
_MAX_NAME = 256  # characters of one element name, unit or task


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
    def from_dict(cls, d: Any) -> Feature:
        """Parse a feature description (a dataset's, a policy's, a client's handshake).

        Every field's type is checked before use, so input from the network or a damaged file
        gives a ``SpecError`` that names the field, never another exception.

        Raises:
            SpecError: not a mapping, a missing or mistyped field, a dtype outside
                ``FEATURE_DTYPES``, more than 4 axes or an axis over 65536, non-finite limits.
        """
        if not isinstance(d, dict):
            raise SpecError(f"a feature description must be a mapping, got {type(d).__name__}")
        dtype, shape = d.get("dtype"), d.get("shape")
        if not isinstance(dtype, str) or dtype not in FEATURE_DTYPES:
            raise SpecError(f"feature dtype must be one of {sorted(FEATURE_DTYPES)}, got {_short(dtype)}")
        if (not isinstance(shape, (list, tuple)) or len(shape) > _MAX_NDIM
                or not all(_is_int(n) and 0 <= n <= _MAX_DIM for n in shape)):
            raise SpecError(f"feature shape must be a list of at most {_MAX_NDIM} sizes in "
                            f"0..{_MAX_DIM}, got {_short(shape)}")
        unit = d.get("unit", "")
        if not isinstance(unit, str) or len(unit) > _MAX_NAME:
            raise SpecError(f"feature unit must be a string, got {_short(unit)}")
        try:
            return cls(
                dtype=dtype,
                shape=tuple(shape),
                names=_optional_list(d, "names", _is_name),
                unit=unit,
                low=_optional_list(d, "low", _is_finite),
                high=_optional_list(d, "high", _is_finite),
            )
        except (TypeError, ValueError) as e:
            raise SpecError(f"malformed feature description: {e}") from e


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def _is_name(x: Any) -> bool:
    return isinstance(x, str) and len(x) <= _MAX_NAME


def _short(value: Any) -> str:
    """``repr`` cut to 80 characters: error messages quote input that may be huge."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _optional_list(d: dict, key: str, valid) -> tuple | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) > _MAX_DIM or not all(valid(x) for x in value):
        raise SpecError(f"feature {key} must be a list of {'names' if valid is _is_name else 'finite numbers'}, "
                        f"got {_short(value)}")
    return tuple(float(x) for x in value) if valid is _is_finite else tuple(value)


@dataclass(frozen=True)
class SafetySpec:
    """Limits the safety layer (``tether.robot.safety``) applies to every command.

    Attributes:
        max_delta_per_tick: per action element, the largest change from the previously applied
            action in one control tick (action units), or None.
        max_velocity: per action element, the largest speed of a position target (action units
            per s, e.g. rad/s for joint targets), or None. Applied per tick as a change of at
            most ``max_velocity / rate`` at the rate the server actually runs, so it holds when
            a server runs faster or slower than the spec's rate, where ``max_delta_per_tick``
            (a bound per tick) would not. Delta actions bound their speed by the action's own
            ``low``/``high`` (a displacement per tick).
        workspace_low, workspace_high: end-effector box (m) in the frame of the state's
            ``ee_state_names``.
        ee_state_names: names in ``observation.state`` of the end-effector x, y, z (m).
        ee_action_axes: action elements that move the end effector along x, y, z.
        ee_action_kind: what those elements are: ``"delta"``, a displacement (commands that push
            further out of the box on an axis are zeroed on it), or ``"absolute"``, a target
            position in the state's frame (targets are clipped into the box).
    """

    max_delta_per_tick: tuple[float, ...] | None = None
    max_velocity: tuple[float, ...] | None = None
    workspace_low: tuple[float, ...] | None = None
    workspace_high: tuple[float, ...] | None = None
    ee_state_names: tuple[str, ...] = ()
    ee_action_axes: tuple[int, ...] | None = None
    ee_action_kind: str = "delta"

    def __post_init__(self) -> None:
        for attr in ("max_delta_per_tick", "max_velocity", "workspace_low", "workspace_high", "ee_action_axes"):
            if getattr(self, attr) is not None:
                object.__setattr__(self, attr, tuple(getattr(self, attr)))
        object.__setattr__(self, "ee_state_names", tuple(self.ee_state_names))
        if self.ee_action_kind not in ("delta", "absolute"):
            raise SpecError(f"safety.ee_action_kind must be 'delta' or 'absolute', got {_short(self.ee_action_kind)}")
        for attr in ("max_delta_per_tick", "max_velocity"):
            value = getattr(self, attr)
            if value is not None and not all(_is_finite(x) and x >= 0 for x in value):
                raise SpecError(f"safety.{attr} must be finite and >= 0, got {_short(value)}")

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Any) -> SafetySpec:
        """Parse a safety spec, checking every field's type.

        Raises:
            SpecError: not a mapping, an unknown field, or a mistyped one.
        """
        if not isinstance(d, dict):
            raise SpecError(f"a safety spec must be a mapping, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise SpecError(f"malformed safety spec: unknown fields {_short(sorted(map(str, unknown)))}")
        kw = {}
        for key, valid in (("max_delta_per_tick", _is_finite), ("max_velocity", _is_finite),
                           ("workspace_low", _is_finite), ("workspace_high", _is_finite),
                           ("ee_action_axes", _is_int), ("ee_state_names", _is_name)):
            if d.get(key) is not None:
                value = d[key]
                if not isinstance(value, (list, tuple)) or len(value) > _MAX_DIM or not all(map(valid, value)):
                    kind = {_is_finite: "finite numbers", _is_int: "integers", _is_name: "names"}[valid]
                    raise SpecError(f"malformed safety spec: {key} must be a list of {kind}, got {_short(value)}")
                kw[key] = tuple(value)
        if "ee_action_kind" in d:
            kw["ee_action_kind"] = d["ee_action_kind"]
        return cls(**kw)


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
        if not (np.isfinite(self.control_rate_hz) and 0 < self.control_rate_hz <= 100_000):
            raise SpecError(f"control_rate_hz must be in (0, 100000] Hz, got {self.control_rate_hz}")
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
    def from_dict(cls, d: Any) -> RobotSpec:
        """Parse a spec dict, checking the type of every field before use (specs come from the
        network and from files).

        Raises:
            SpecError: naming what is malformed.
        """
        if not isinstance(d, dict):
            raise SpecError(f"a robot spec must be a mapping, got {type(d).__name__}")
        missing = [k for k in ("robot_type", "control_rate_hz", "observation", "action") if k not in d]
        if missing:
            raise SpecError(f"malformed robot spec: missing fields {missing}")
        robot_type, rate, observation = d["robot_type"], d["control_rate_hz"], d["observation"]
        tasks = d.get("tasks", ())
        if not _is_name(robot_type):
            raise SpecError(f"malformed robot spec: robot_type must be a string, got {_short(robot_type)}")
        if not _is_finite(rate):
            raise SpecError(f"malformed robot spec: control_rate_hz must be a number, got {_short(rate)}")
        if not isinstance(observation, dict) or len(observation) > _MAX_NDIM * 64:
            raise SpecError(f"malformed robot spec: observation must be a mapping, got {_short(observation)}")
        if not all(_is_name(k) for k in observation):
            raise SpecError("malformed robot spec: observation keys must be strings")
        if not isinstance(tasks, (list, tuple)) or len(tasks) > _MAX_DIM or not all(map(_is_name, tasks)):
            raise SpecError(f"malformed robot spec: tasks must be a list of names, got {_short(tasks)}")
        return cls(
            robot_type=robot_type,
            control_rate_hz=float(rate),
            observation={k: Feature.from_dict(v) for k, v in observation.items()},
            action=Feature.from_dict(d["action"]),
            tasks=tuple(tasks),
            safety=SafetySpec.from_dict({} if d.get("safety") is None else d["safety"]),
        )

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
