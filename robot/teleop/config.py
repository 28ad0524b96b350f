"""Typed settings of the teleop devices: one ``TeleopConfig`` with the mapping settings shared by
all devices and a section per device (nested dataclasses, so a tyro CLI exposes them as
``--teleop.deadzone``, ``--teleop.gamepad.index`` and so on)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TWIST_AXES = ("x", "y", "z", "roll", "pitch", "yaw")
"""The device twist's axes, in order: translation along and rotation about the robot's x, y, z."""


@dataclass
class KeyboardOptions:
    """Terminal keyboard (``tether.robot.teleop.keyboard``).

    Attributes:
        fd: file descriptor of the terminal to read (default: 0, standard input).
        first_hold_s: how long one key press drives its axis (s); longer than the terminal's
            autorepeat delay (X and the Linux console: 250-660 ms) so a held key moves smoothly.
        repeat_hold_s: how long each autorepeat refreshes it (s); longer than the autorepeat
            interval (25-33 Hz -> 30-40 ms); a released key stops within this time.
        escape_timeout_s: how long to wait for the rest of an escape sequence (s) before a lone
            ESC counts as the Esc key.
    """

    fd: int | None = None
    first_hold_s: float = 0.55
    repeat_hold_s: float = 0.15
    escape_timeout_s: float = 0.03


@dataclass
class SpaceMouseOptions:
    """3Dconnexion SpaceMouse through pyspacemouse (``tether.robot.teleop.spacemouse``).

    Attributes:
        device: pyspacemouse's device name (e.g. ``"SpaceMouse Compact"``); None: the first found.
        path: open this HID node instead (e.g. ``/dev/hidraw3``).
        gripper_button: index of the button that toggles the gripper.
        intervention_button: index of the intervention button.
    """

    device: str | None = None
    path: str | None = None
    gripper_button: int = 0
    intervention_button: int = 1


@dataclass
class GamepadOptions:
    """Gamepad through pygame's joystick API (``tether.robot.teleop.gamepad``). Defaults are SDL2's
    layout of an Xbox-style pad (xpad, XInput, DualShock/DualSense through hid-playstation).

    Attributes:
        index: joystick index (0: the first connected).
        stick_axes: axis indices of left-stick x, left-stick y, right-stick x, right-stick y.
        hat: index of the D-pad hat (roll on its x, pitch on its y); -1: none.
        gripper_button, intervention_button, joint_bank_button, end_episode_button,
        rerecord_button, stop_button, estop_button: button indices (-1: unbound).
    """

    index: int = 0
    stick_axes: tuple[int, int, int, int] = (0, 1, 3, 4)
    hat: int = 0
    gripper_button: int = 0  # A / cross
    estop_button: int = 1  # B / circle
    rerecord_button: int = 2  # X / square
    end_episode_button: int = 3  # Y / triangle
    intervention_button: int = 4  # LB / L1
    joint_bank_button: int = 5  # RB / R1
    stop_button: int = 6  # Back / View / Share


@dataclass
class LeaderOptions:
    """Leader arm (``tether.robot.teleop.leader``).

    Attributes:
        robot: the leader's driver: ``"dynamixel"`` or ``"feetech"`` (an SO-100 / SO-101 leader;
            both need ``robot_config``), or ``"pointmass"``.
        robot_config: JSON file of the driver's settings, as ``tether serve --robot-config``
            takes (the fields of ``DynamixelConfig`` / ``FeetechConfig``; a Feetech leader needs
            its own ``calibration`` from ``tether calibrate``).
        joint_names: the leader's ``observation.state`` name for each follower action element
            (default: the follower's action names).
        sign: per follower joint, +1 or -1 (a leader servo mounted mirrored); default all +1.
        offset: per follower joint, added after the sign (action units, rad); default 0.
        buttons: a second device for the intervention and episode keys (a leader has no buttons):
            ``"keyboard"`` (the terminal) or ``"none"``.
    """

    robot: Literal["dynamixel", "feetech", "pointmass"] = "dynamixel"
    robot_config: str | None = None
    joint_names: tuple[str, ...] = ()
    sign: tuple[float, ...] = ()
    offset: tuple[float, ...] = ()
    buttons: Literal["keyboard", "none"] = "keyboard"


@dataclass
class TeleopConfig:
    """How device axes become robot actions (``tether.robot.teleop.mapping``).

    Attributes:
        mode: ``"ee"``: end-effector deltas or velocities (action names such as ``dx, dy, dz,
            droll, dpitch, dyaw, gripper`` or ``vx, vy``); ``"joint"``: absolute joint targets;
            ``"auto"``: ee when the action's names read as end-effector axes, else joint.
        translation_scale: action at full deflection of a translation axis, as a fraction of the
            action's limit (or in the action's units when it has no limits).
        rotation_scale: the same for rotation axes.
        joint_speed: joint mode: joint speed at full deflection (action units per s, rad/s).
        joint_max_lead: joint mode: how far a target may run ahead of the measured joint position
            (action units, rad), so a blocked joint does not wind up a far target.
        deadzone: fraction of each axis' range read as zero (device noise, a stick's rest
            offset); the rest of the range is rescaled to start at zero.
        axes: for each robot twist axis (x, y, z, roll, pitch, yaw), the device axis that drives
            it, e.g. ``("y", "x", "z", "pitch", "roll", "yaw")`` swaps x and y (a ``-`` in front
            also inverts it, in Python; on a command line use ``invert``).
        invert: robot twist axes whose sign is flipped (after ``axes``), e.g. ``("y", "yaw")``.
        joint_axes: joint mode: the action element each twist axis drives (up to 6); default:
            banks of 6 joints in action order, the joint-bank button moves to the next bank.
        intervention: ``"hold"`` or ``"toggle"`` for button devices; the keyboard always toggles
            (a terminal reports no key releases).
    """

    mode: Literal["auto", "ee", "joint"] = "auto"
    translation_scale: float = 0.5
    rotation_scale: float = 0.5
    joint_speed: float = 0.5
    joint_max_lead: float = 0.2
    deadzone: float = 0.1
    axes: tuple[str, ...] = TWIST_AXES
    invert: tuple[str, ...] = ()
    joint_axes: tuple[int, ...] = ()
    intervention: Literal["hold", "toggle"] = "hold"
    keyboard: KeyboardOptions = field(default_factory=KeyboardOptions)
    spacemouse: SpaceMouseOptions = field(default_factory=SpaceMouseOptions)
    gamepad: GamepadOptions = field(default_factory=GamepadOptions)
    leader: LeaderOptions = field(default_factory=LeaderOptions)
