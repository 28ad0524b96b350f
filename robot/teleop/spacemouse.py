"""3Dconnexion SpaceMouse (Compact, Wireless, Pro, SpaceNavigator, ...) through ``pyspacemouse``,
which reads the raw HID reports through hidapi (``easyhid``); no 3Dconnexion driver is needed.
Library docs: https://spacemouse.kubaandrysek.cz (pyspacemouse 2.x API: ``open``,
``open_by_path``, ``SpaceMouseDevice.read`` -> ``SpaceMouseState``).

Axes are read in pyspacemouse's ``AxisConvention.HID_Z_UP`` frame (right-handed, z up: x to the
right, y away from the operator, roll/pitch/yaw about x/y/z), each in [-1, 1]; remap them to the
robot's frame with ``TeleopConfig.axes`` and ``invert`` (a robot whose x points away from the
operator and y to the operator's left: ``axes=("y", "x", "z", "pitch", "roll", "yaw")``,
``invert=("y", "pitch")``). Button ``gripper_button`` toggles the gripper, button
``intervention_button`` is the intervention button (held, or toggled: ``TeleopConfig.intervention``).

Set-up (Linux): ``pip install 'tether[teleop]'``; the hidapi C library
(``sudo apt install libhidapi-hidraw0``); read access to the device's ``/dev/hidraw*`` node for
your user, e.g. a udev rule ``KERNEL=="hidraw*", ATTRS{idVendor}=="256f", MODE="0666"``
(3Dconnexion's vendor id; older models use 046d).
"""

from __future__ import annotations

import numpy as np

from tether.robot.spec import RobotSpec
from tether.robot.teleop.base import GRIPPER, INTERVENTION, TeleopError, missing_library
from tether.robot.teleop.config import SpaceMouseOptions, TeleopConfig
from tether.robot.teleop.mapping import AxesDevice

_MAX_REPORTS_PER_READ = 256
_HINT = (
    "check that it is plugged in, that the hidapi C library is installed "
    "(sudo apt install libhidapi-hidraw0) and that your user may read its /dev/hidraw* node "
    "(a udev rule; see tether.robot.teleop.spacemouse)"
)


def spacemouse_input(state, options: SpaceMouseOptions) -> tuple[np.ndarray, set[str]]:
    """Map one pyspacemouse state to the device twist and held logical buttons.

    Args:
        state: a ``pyspacemouse.SpaceMouseState`` (or anything with float attributes ``x, y, z,
            roll, pitch, yaw`` in [-1, 1] and a ``buttons`` sequence of 0/1).
        options: which buttons are the gripper toggle and the intervention button.

    Returns:
        (twist (6,) float64 in [-1, 1] ordered x, y, z, roll, pitch, yaw; held buttons).
    """
    twist = np.array([state.x, state.y, state.z, state.roll, state.pitch, state.yaw], np.float64)
    buttons = list(state.buttons)
    held = set()
    for logical, index in ((GRIPPER, options.gripper_button), (INTERVENTION, options.intervention_button)):
        if 0 <= index < len(buttons) and buttons[index]:
            held.add(logical)
    return np.clip(twist, -1.0, 1.0), held


class SpaceMouseDevice(AxesDevice):
    """SpaceMouse teleop device (see module docstring for set-up and axes).

    Args:
        spec: the robot's spec (None: buttons only, an empty action).
        config: mapping settings; ``config.spacemouse`` picks the device and its buttons.

    Raises:
        MappingError: the spec's action cannot be mapped (at construction).
        TeleopError: from ``start`` when pyspacemouse is not installed or no SpaceMouse can be
            opened; from ``read`` when it went away.
    """

    name = "spacemouse"

    def __init__(self, spec: RobotSpec | None, config: TeleopConfig | None = None):
        super().__init__(spec, config)
        self._device = None

    def start(self) -> None:
        """Open the SpaceMouse (the first found, or ``options.device`` / ``options.path``)."""
        try:
            import pyspacemouse
        except ImportError as e:
            raise missing_library(self.name, "pyspacemouse", e) from e
        opts = self.config.spacemouse
        convention = pyspacemouse.AxisConvention.HID_Z_UP
        try:
            if opts.path:
                self._device = pyspacemouse.open_by_path(opts.path, axis_convention=convention)
            else:
                self._device = pyspacemouse.open(device=opts.device, axis_convention=convention)
        except Exception as e:  # pyspacemouse raises RuntimeError, ValueError, FileNotFoundError
            where = opts.path or opts.device or "any supported model"
            raise TeleopError(f"spacemouse: cannot open a SpaceMouse ({where}): {e}; {_HINT}") from e

    def stop(self) -> None:
        """Close the HID device (safe to call twice)."""
        if self._device is not None:
            device, self._device = self._device, None
            try:
                device.close()
            except Exception:
                pass  # unplugged: nothing left to close

    def _poll(self) -> tuple[np.ndarray, set[str], set[str]]:
        if self._device is None:
            raise TeleopError("spacemouse: read() before start()")
        try:
            # One read() consumes one HID report (translation and rotation come in separate
            # reports on most models); drain what queued since the last step so the state is
            # the newest, not one that lags further behind every step.
            state = self._device.read()
            for _ in range(_MAX_REPORTS_PER_READ):
                t = state.t
                state = self._device.read()
                if state.t == t:
                    break
        except Exception as e:
            raise TeleopError(f"spacemouse: reading the device failed ({e}); {_HINT}") from e
        twist, held = spacemouse_input(state, self.config.spacemouse)
        return twist, held, set()
