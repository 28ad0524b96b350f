"""From device axes to the robot's action, through the robot spec.

Every axis device (keyboard, SpaceMouse, gamepad) reports a normalized twist: 6 numbers in
[-1, 1] for translation along and rotation about the robot's x, y, z, in that order, plus a gripper
toggle. ``ActionMapper`` turns it into the action the spec asks for:

- end-effector mode: the action's elements are end-effector deltas or velocities (``dx, dy, dz``
  [``droll, dpitch, dyaw``] [``gripper``], like MetaWorld's normalized ``(dx, dy, dz, gripper)``,
  or the point mass' ``(vx, vy)`` in m/s). Full deflection gives ``translation_scale`` (or
  ``rotation_scale``) times the element's limit; the gripper element goes to its high limit when
  closed and its low limit when open (MetaWorld: +1 closes).
- joint mode: the action is absolute joint targets named like ``observation.state`` elements
  (position-controlled arms such as the DYNAMIXEL driver). Each twist axis drives one joint: its
  target moves by ``joint_speed`` (rad/s) times the axis, from where the joint is measured, never
  further than ``joint_max_lead`` ahead of it, within the joint limits. Joints whose name contains
  ``gripper`` follow the gripper toggle. With more than 6 joints the axes drive a bank of 6 and the
  joint-bank button moves to the next bank.
"""

from __future__ import annotations

import abc
import re
import time

import numpy as np

from tether.robot.spec import RobotSpec
from tether.robot.teleop.base import (
    EVENTS,
    GRIPPER,
    JOINT_BANK,
    ButtonTracker,
    MappingError,
    TeleopCommand,
)
from tether.robot.teleop.config import TWIST_AXES, TeleopConfig

_TRANSLATION = re.compile(r"^(?:ee_|eef_|tcp_)?(?:d|v|delta_|vel_)([xyz])(?:_vel|_delta)?$")
_ROTATION = re.compile(
    r"^(?:ee_|eef_|tcp_)?(?:d|v|delta_|vel_|w)(roll|pitch|yaw|rx|ry|rz|x|y|z)(?:_vel|_delta)?$"
)
_ROTATION_AXIS = {"roll": 3, "pitch": 4, "yaw": 5, "rx": 3, "ry": 4, "rz": 5, "x": 3, "y": 4, "z": 5}
_MAX_DT_S = 0.1  # a stalled loop must not turn into one large joint step


def apply_deadzone(values: np.ndarray, deadzone: float) -> np.ndarray:
    """Zero ``|v| < deadzone`` and rescale the rest so the output still spans [-1, 1] without a
    jump at the edge of the deadzone; inputs are clipped to [-1, 1] first.

    Args:
        values: normalized axis values, any shape.
        deadzone: in [0, 1).

    Raises:
        ValueError: a deadzone outside [0, 1).
    """
    if not 0.0 <= deadzone < 1.0:
        raise ValueError(f"deadzone must be in [0, 1), got {deadzone}")
    v = np.clip(np.asarray(values, np.float64), -1.0, 1.0)
    magnitude = np.maximum(np.abs(v) - deadzone, 0.0) / (1.0 - deadzone)
    return np.sign(v) * magnitude


def parse_axes(axes: tuple[str, ...], invert: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Parse ``TeleopConfig.axes`` and ``invert`` into (source index per twist axis, sign per
    twist axis).

    Raises:
        MappingError: not 6 axes, or a name that is not a twist axis (``config.TWIST_AXES``).
    """
    if len(axes) != 6:
        raise MappingError(f"axes needs 6 entries (one per {TWIST_AXES}), got {len(axes)}")
    index, sign = [], []
    for entry in axes:
        name = entry.lstrip("-+")
        if name not in TWIST_AXES:
            raise MappingError(f"axes entry {entry!r}: not one of {TWIST_AXES} (with '-' to invert)")
        index.append(TWIST_AXES.index(name))
        sign.append(-1.0 if entry.startswith("-") else 1.0)
    for name in invert:
        if name not in TWIST_AXES:
            raise MappingError(f"invert entry {name!r}: not one of {TWIST_AXES}")
        sign[TWIST_AXES.index(name)] *= -1.0
    return np.array(index), np.array(sign)


def _ee_layout(spec: RobotSpec) -> tuple[dict[int, int], list[int]]:
    """(action index -> twist axis, gripper action indices) or MappingError saying why not."""
    names = spec.action.names
    axis_of: dict[int, int] = {}
    grippers: list[int] = []
    unmapped = []
    explicit = spec.safety.ee_action_axes
    if explicit is not None:
        for twist_axis, i in enumerate(explicit[:3]):
            axis_of[int(i)] = twist_axis
    for i, raw in enumerate(names):
        if i in axis_of:
            continue
        name = raw.lower()
        if "grip" in name or "claw" in name:
            grippers.append(i)
        elif m := _TRANSLATION.match(name):
            axis_of[i] = "xyz".index(m.group(1))
        elif m := _ROTATION.match(name):
            axis_of[i] = _ROTATION_AXIS[m.group(1)]
        else:
            unmapped.append(raw)
    if unmapped:
        raise MappingError(f"action elements {unmapped} are not end-effector axes or a gripper")
    if not any(a < 3 for a in axis_of.values()):
        raise MappingError("no translation axis (names like dx, vy, delta_z) in the action")
    return axis_of, grippers


def _full_scale(spec: RobotSpec) -> np.ndarray:
    """Per action element, the magnitude of its limit (1 in action units when unbounded)."""
    n = spec.action.shape[0]
    if spec.action.low is None or spec.action.high is None:
        return np.ones(n)
    return np.maximum(np.abs(spec.action.low), np.abs(spec.action.high))


class ActionMapper:
    """Maps a normalized twist and gripper state to ``spec.action`` (see the module docstring).

    Args:
        spec: the robot's spec; its action must be a named vector.
        config: scaling, deadzone, mode and axis remapping.

    Attributes:
        mode: the resolved mode, ``"ee"`` or ``"joint"``.
        gripper_closed: the gripper toggle's state (starts open).

    Raises:
        MappingError: the action cannot be mapped in the asked mode (the message says why, for
            both modes when ``mode="auto"``).
    """

    def __init__(self, spec: RobotSpec, config: TeleopConfig):
        self.spec = spec
        self.config = config
        action = spec.action
        if action.names is None or len(action.shape) != 1:
            raise MappingError(f"{spec.robot_type}: the action must be a named vector")
        self._src, self._sign = parse_axes(config.axes, config.invert)
        apply_deadzone(np.zeros(1), config.deadzone)  # validates it
        self.n = action.shape[0]
        self.low = np.full(self.n, -np.inf) if action.low is None else np.asarray(action.low)
        self.high = np.full(self.n, np.inf) if action.high is None else np.asarray(action.high)
        self.gripper_closed = False
        self.bank = 0
        mode = config.mode
        if mode not in ("auto", "ee", "joint"):
            raise MappingError(f"mode must be auto, ee or joint, got {mode!r}")
        reasons = []
        if mode in ("auto", "ee"):
            try:
                self._setup_ee()
                self.mode = "ee"
                return
            except MappingError as e:
                reasons.append(f"end-effector mode: {e}")
        if mode in ("auto", "joint"):
            try:
                self._setup_joint()
                self.mode = "joint"
                return
            except MappingError as e:
                reasons.append(f"joint mode: {e}")
        raise MappingError(
            f"cannot map teleop axes to the action {list(action.names)} of {spec.robot_type!r}: "
            + "; ".join(reasons)
        )

    # ------------------------------------------------------------------------------- set-up
    def _setup_ee(self) -> None:
        self._axis_of, self._grippers = _ee_layout(self.spec)
        scale = np.zeros(self.n)
        fs = _full_scale(self.spec)
        for i, axis in self._axis_of.items():
            scale[i] = fs[i] * (self.config.translation_scale if axis < 3 else self.config.rotation_scale)
        self._ee_scale = scale

    def _setup_joint(self) -> None:
        state = self.spec.observation.get("observation.state")
        if state is None or state.names is None:
            raise MappingError("no named observation.state to read joint positions from")
        names = self.spec.action.names
        if "/s" in self.spec.action.unit:
            raise MappingError(f"the action's unit {self.spec.action.unit!r} is a rate, not joint positions")
        missing = [n for n in names if n not in state.names]
        if missing:
            raise MappingError(f"action joints {missing} are not in observation.state {list(state.names)}")
        self._state_index = np.array([state.names.index(n) for n in names])
        self._grippers = [i for i, n in enumerate(names) if "grip" in n.lower()]
        self._joints = [i for i in range(self.n) if i not in self._grippers]
        if self.config.joint_axes:
            bad = [j for j in self.config.joint_axes if not 0 <= j < self.n]
            if len(self.config.joint_axes) > 6 or bad:
                raise MappingError(f"joint_axes {self.config.joint_axes}: up to 6 indices below {self.n}")
        if self._grippers and (np.isinf(self.low[self._grippers]).any() or np.isinf(self.high[self._grippers]).any()):
            raise MappingError("a gripper joint needs limits (its open and closed positions)")
        self._target: np.ndarray | None = None
        self._episode = None

    # ----------------------------------------------------------------------------- mapping
    def shape_twist(self, raw: np.ndarray) -> np.ndarray:
        """Device axes (6,) in [-1, 1] -> the robot twist (6,): remapped, inverted, deadzoned."""
        raw = np.asarray(raw, np.float64)
        if raw.shape != (6,):
            raise ValueError(f"a twist has shape (6,), got {raw.shape}")
        return apply_deadzone(raw[self._src] * self._sign, self.config.deadzone)

    def next_bank(self) -> None:
        """Joint mode: drive the next 6 joints (wraps around)."""
        if self.mode == "joint" and not self.config.joint_axes:
            self.bank = (self.bank + 1) % max(1, -(-len(self._joints) // 6))

    def driven_joints(self) -> list[int]:
        """Joint mode: the action index each twist axis drives now (fewer than 6 on small arms)."""
        if self.config.joint_axes:
            return list(self.config.joint_axes)
        return self._joints[6 * self.bank : 6 * self.bank + 6]

    def action(self, twist: np.ndarray, state: dict | None, dt: float) -> np.ndarray:
        """The action for this step.

        Args:
            twist: the robot twist (6,) from ``shape_twist``.
            state: the latest robot-server state message (joint mode reads its
                ``observation["observation.state"]``, ``episode`` and ``estop``).
            dt: time since the previous read (s), for joint mode's speed; capped at 0.1 s.

        Returns:
            float32 array of shape ``spec.action.shape`` within the action limits.

        Raises:
            MappingError: joint mode without an ``observation.state`` in ``state``.
        """
        if self.mode == "ee":
            out = np.zeros(self.n)
            for i, axis in self._axis_of.items():
                out[i] = twist[axis] * self._ee_scale[i]
            for i in self._grippers:
                out[i] = self.high[i] if self.gripper_closed else self.low[i]
                if not np.isfinite(out[i]):
                    out[i] = 1.0 if self.gripper_closed else -1.0
            return np.clip(out, self.low, self.high).astype(np.float32)
        return self._joint_action(twist, state, min(max(dt, 0.0), _MAX_DT_S))

    def _joint_action(self, twist: np.ndarray, state: dict | None, dt: float) -> np.ndarray:
        try:
            measured = np.asarray(state["observation"]["observation.state"], np.float64)[self._state_index]
        except (TypeError, KeyError, IndexError) as e:
            raise MappingError(f"joint mode needs the state's observation.state: {e}") from e
        episode = state.get("episode")
        # Re-anchor on the measured pose at a new episode and while the e-stop holds the arm, so a
        # target left from before never jumps the arm when commands resume.
        if self._target is None or episode != self._episode or state.get("estop"):
            self._target = np.clip(measured, self.low, self.high)
            self._episode = episode
        for axis, j in enumerate(self.driven_joints()):
            if j in self._grippers:
                continue
            self._target[j] += twist[axis] * self.config.joint_speed * dt
        lead = self.config.joint_max_lead
        self._target = np.clip(self._target, measured - lead, measured + lead)
        for j in self._grippers:
            self._target[j] = self.high[j] if self.gripper_closed else self.low[j]
        self._target = np.clip(self._target, self.low, self.high)
        return self._target.astype(np.float32)


class AxesDevice(abc.ABC):
    """Base of the axis devices: polls the hardware, tracks buttons, maps through the spec.

    Subclasses set ``name`` and implement ``start``, ``stop`` and ``_poll``, which returns the
    device's twist (6,) in [-1, 1] (in the device's own axes, before ``TeleopConfig.axes``), the
    logical buttons held now and those tapped since the last poll (``base.BUTTONS``).

    Args:
        spec: the robot's spec; None for a buttons-only device (a leader arm's companion), whose
            commands carry an empty action.
        config: mapping and device settings.
        intervention: ``"hold"`` or ``"toggle"`` (default: ``config.intervention``).

    Raises:
        MappingError: the spec's action cannot be mapped (at construction, before any hardware).
    """

    name = "axes"

    def __init__(
        self, spec: RobotSpec | None, config: TeleopConfig | None = None, intervention: str | None = None
    ):
        self.spec = spec
        self.config = config or TeleopConfig()
        self.mapper = None if spec is None else ActionMapper(spec, self.config)
        self.buttons = ButtonTracker(intervention or self.config.intervention)
        self._last_read: float | None = None

    @abc.abstractmethod
    def start(self) -> None:
        """Open the device (``TeleopDevice.start``)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Release the device (``TeleopDevice.stop``)."""

    @abc.abstractmethod
    def _poll(self) -> tuple[np.ndarray, set[str], set[str]]:
        """(twist (6,) in [-1, 1] in the device's axes, buttons held, buttons tapped since the
        last poll)."""

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def read(self, state: dict | None) -> TeleopCommand:
        """Poll the device and map it; see ``TeleopDevice.read``."""
        raw, held, tapped = self._poll()
        now = time.monotonic()
        dt = 0.0 if self._last_read is None else now - self._last_read
        self._last_read = now
        pressed = self.buttons.update(held, tapped)
        events = tuple(b for b in pressed if b in EVENTS)
        if self.mapper is None:
            return TeleopCommand(np.zeros(0, np.float32), self.buttons.intervention, events)
        if GRIPPER in pressed:
            self.mapper.gripper_closed = not self.mapper.gripper_closed
        if JOINT_BANK in pressed:
            self.mapper.next_bank()
        action = self.mapper.action(self.mapper.shape_twist(raw), state, dt)
        return TeleopCommand(action, self.buttons.intervention, events)

