"""Teleoperation devices: terminal keyboard, SpaceMouse, gamepad and leader arm.

Each device is read once per control step with the latest robot-server state and answers a
``TeleopCommand`` (an action shaped like the robot spec's, the intervention flag, operator
events). ``make_device`` builds one by name. The optional libraries (pyspacemouse, pygame) are
imported only when their device starts: ``pip install 'tether[teleop]'``.
"""

from __future__ import annotations

from tether.robot.spec import RobotSpec
from tether.robot.teleop.base import (
    END_EPISODE,
    ESTOP,
    EVENTS,
    RERECORD,
    STOP,
    MappingError,
    TeleopCommand,
    TeleopDevice,
    TeleopError,
)
from tether.robot.teleop.config import (
    GamepadOptions,
    KeyboardOptions,
    LeaderOptions,
    SpaceMouseOptions,
    TeleopConfig,
)

DEVICES = ("keyboard", "spacemouse", "gamepad", "leader")

__all__ = [
    "DEVICES",
    "END_EPISODE",
    "ESTOP",
    "EVENTS",
    "RERECORD",
    "STOP",
    "GamepadOptions",
    "KeyboardOptions",
    "LeaderOptions",
    "MappingError",
    "SpaceMouseOptions",
    "TeleopCommand",
    "TeleopConfig",
    "TeleopDevice",
    "TeleopError",
    "make_device",
]


def make_device(name: str, spec: RobotSpec, config: TeleopConfig | None = None) -> TeleopDevice:
    """Build the teleop device ``name`` for a robot with ``spec`` (not started yet).

    Args:
        name: one of ``DEVICES``: ``keyboard``, ``spacemouse``, ``gamepad``, ``leader`` (its driver
            comes from ``config.leader``: ``robot`` and a JSON ``robot_config`` file, as for
            ``tether serve --robot-config``; its buttons from the terminal keyboard unless
            ``config.leader.buttons == "none"``).
        spec: the robot's spec (from the server's handshake, ``RobotClient.connect()``).
        config: mapping and device settings (defaults when None).

    Raises:
        ValueError: an unknown device name.
        MappingError: the spec's action cannot be mapped for this device.
        TeleopError: the leader's driver config is missing or invalid.
    """
    config = config or TeleopConfig()
    if name == "keyboard":
        from tether.robot.teleop.keyboard import KeyboardDevice

        return KeyboardDevice(spec, config)
    if name == "spacemouse":
        from tether.robot.teleop.spacemouse import SpaceMouseDevice

        return SpaceMouseDevice(spec, config)
    if name == "gamepad":
        from tether.robot.teleop.gamepad import GamepadDevice

        return GamepadDevice(spec, config)
    if name == "leader":
        from tether.robot.teleop.keyboard import KeyboardDevice
        from tether.robot.teleop.leader import LeaderArm, make_leader_robot

        buttons = KeyboardDevice(None, config) if config.leader.buttons == "keyboard" else None
        return LeaderArm(make_leader_robot(config.leader), spec, config.leader, buttons)
    raise ValueError(f"unknown teleop device {name!r}; known: {', '.join(DEVICES)}")
