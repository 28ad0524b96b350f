"""Gamepad teleoperation through pygame's joystick API (SDL2).

Why pygame (the community edition, ``pygame-ce``, which installs as ``import pygame``) and not
``evdev``: its wheels bundle SDL2, so ``pip install`` needs no compiler or system library and the
same code runs on Linux, macOS and Windows; SDL knows the common pads (Xbox, DualShock, DualSense,
8BitDo, Switch Pro) and hot-plugging. ``evdev`` is Linux-only and builds from source against the
kernel headers. No window is opened: SDL runs with ``SDL_VIDEODRIVER=dummy`` (unless set) and
``SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS=1`` so the pad is read without a focused window, over SSH
or on a bare console. pygame docs: ``pygame.joystick`` (https://pyga.me/docs/ref/joystick.html).

Default layout (``GamepadOptions``, SDL2 indices of an Xbox-style pad; robot frame x forward,
y left, z up): left stick up/down = +x/-x, left/right = +y/-y; right stick up/down = +z/-z,
left/right = +yaw/-yaw; D-pad left/right = -roll/+roll, up/down = +pitch/-pitch; A gripper toggle,
B estop, X rerecord, Y end_episode, LB intervention, RB next joint bank, Back stop.

Set-up (Linux): ``pip install 'tether[teleop]'``; your user needs read access to
``/dev/input/event*`` (the ``input`` group on most distributions).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from tether.robot.spec import RobotSpec
from tether.robot.teleop.base import (
    END_EPISODE,
    ESTOP,
    GRIPPER,
    INTERVENTION,
    JOINT_BANK,
    RERECORD,
    STOP,
    TeleopError,
    missing_library,
)
from tether.robot.teleop.config import GamepadOptions, TeleopConfig
from tether.robot.teleop.mapping import AxesDevice


def button_map(options: GamepadOptions) -> dict[int, str]:
    """Button index -> logical button (``base.BUTTONS``) for the options' layout."""
    pairs = (
        (options.gripper_button, GRIPPER),
        (options.intervention_button, INTERVENTION),
        (options.joint_bank_button, JOINT_BANK),
        (options.end_episode_button, END_EPISODE),
        (options.rerecord_button, RERECORD),
        (options.stop_button, STOP),
        (options.estop_button, ESTOP),
    )
    return {index: logical for index, logical in pairs if index >= 0}


def gamepad_input(
    axes: Sequence[float],
    buttons: Sequence[int],
    hats: Sequence[tuple[int, int]],
    options: GamepadOptions,
) -> tuple[np.ndarray, set[str]]:
    """Map one reading of a pad to the device twist and held logical buttons.

    Args:
        axes: every axis in [-1, 1], SDL order (stick y is +1 pulled back, -1 pushed forward).
        buttons: every button, 1 held / 0.
        hats: every hat as (x, y) in {-1, 0, 1} (y +1 is up).
        options: the layout.

    Returns:
        (twist (6,) in [-1, 1] ordered x, y, z, roll, pitch, yaw; held buttons). An axis or hat
        index the pad does not have reads 0.
    """

    def axis(i: int) -> float:
        return float(axes[i]) if 0 <= i < len(axes) else 0.0

    lx, ly, rx, ry = (axis(i) for i in options.stick_axes)
    hx, hy = hats[options.hat] if 0 <= options.hat < len(hats) else (0, 0)
    # Stick forward (SDL y = -1) drives +x and +z; stick right (x = +1) drives -y and -yaw
    # (robot frame: y to the left, yaw counter-clockwise seen from above).
    twist = np.array([-ly, -lx, -ry, float(hx), float(hy), -rx], np.float64)
    held = {name for index, name in button_map(options).items() if index < len(buttons) and buttons[index]}
    return np.clip(twist, -1.0, 1.0), held


class GamepadDevice(AxesDevice):
    """Gamepad teleop device (layout and set-up: module docstring).

    Args:
        spec: the robot's spec (None: buttons only, an empty action).
        config: mapping settings; ``config.gamepad`` has the joystick index and layout.

    Raises:
        MappingError: the spec's action cannot be mapped (at construction).
        TeleopError: from ``start`` when pygame is not installed or there is no pad at the index;
            from ``read`` when the pad was unplugged.
    """

    name = "gamepad"

    def __init__(self, spec: RobotSpec | None, config: TeleopConfig | None = None):
        super().__init__(spec, config)
        self._pygame = None
        self._joystick = None

    def start(self) -> None:
        """Open the pad at ``options.index``."""
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS", "1")
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        try:
            import pygame
        except ImportError as e:
            raise missing_library(self.name, "pygame", e) from e
        self._pygame = pygame
        # The event pump, which updates joystick state, needs the video subsystem (dummy here).
        pygame.display.init()
        pygame.joystick.init()
        index = self.config.gamepad.index
        count = pygame.joystick.get_count()
        if not 0 <= index < count:
            self.stop()
            raise TeleopError(
                f"gamepad: no gamepad at index {index} ({count} connected); plug one in and check "
                "that your user may read /dev/input/event* (the 'input' group)"
            )
        self._joystick = pygame.joystick.Joystick(index)
        self._tapped: set[int] = set()

    def stop(self) -> None:
        """Release the pad and SDL (safe to call twice)."""
        if self._pygame is not None:
            pygame, self._pygame, self._joystick = self._pygame, None, None
            pygame.joystick.quit()
            pygame.display.quit()

    def _poll(self) -> tuple[np.ndarray, set[str], set[str]]:
        pygame, js = self._pygame, self._joystick
        if js is None:
            raise TeleopError("gamepad: read() before start()")
        tapped = set()
        for event in pygame.event.get((pygame.JOYBUTTONDOWN, pygame.JOYDEVICEREMOVED)):
            if event.instance_id != js.get_instance_id():
                continue
            if event.type == pygame.JOYDEVICEREMOVED:
                raise TeleopError(f"gamepad: {js.get_name()!r} was disconnected")
            tapped.add(event.button)  # a press and release between two reads still counts
        axes = [js.get_axis(i) for i in range(js.get_numaxes())]
        buttons = [js.get_button(i) for i in range(js.get_numbuttons())]
        hats = [js.get_hat(i) for i in range(js.get_numhats())]
        twist, held = gamepad_input(axes, buttons, hats, self.config.gamepad)
        names = button_map(self.config.gamepad)
        return twist, held, {names[i] for i in tapped if i in names}
