"""A teleop device as the fine-tuning actor's intervention hook (HIL-SERL, Luo et al., 2024: a
human takes over with a SpaceMouse whenever the policy goes astray; RLIF, Luo et al., 2023: the
take-over itself is the signal).

The device is read on every control step. While its intervention flag is on (the intervention
button held or toggled; the keyboard's ``t`` toggles) its action replaces the policy's and the
actor flags the transition; otherwise the policy acts. The e-stop key or button (or a device
that stops answering) raises :class:`InterventionStop`, which ends the actor's run after the
robot has been told to hold.
"""

from __future__ import annotations

import numpy as np

from tether.robot.spec import RobotSpec
from tether.robot.teleop import ESTOP, STOP, TeleopConfig, TeleopDevice, make_device


class InterventionStop(RuntimeError):
    """The operator pressed the e-stop (or quit) on the intervention device."""


class TeleopIntervention:
    """``intervene(state) -> action or None`` backed by a teleop device.

    Args:
        device: a device name (``keyboard``, ``spacemouse``, ``gamepad``, ``leader``), built for
            the robot's spec by :meth:`bind` (the actor calls it once connected).
        config: mapping and device settings.
    """

    def __init__(self, device: str, config: TeleopConfig | None = None):
        self.config = config or TeleopConfig()
        self.name = device
        self.device: TeleopDevice | None = None
        self.active = False

    def bind(self, spec: RobotSpec) -> None:
        """Build the device for the robot's spec (once) and start it; ``close`` stops it.

        Raises:
            MappingError: the spec's action cannot be driven by this device.
            TeleopError: the device is missing or its library is not installed.
        """
        if self.device is None:
            self.device = make_device(self.name, spec, self.config)
        self.device.start()

    def __call__(self, state: dict) -> np.ndarray | None:
        """The operator's action while intervening, else None.

        Raises:
            InterventionStop: e-stop or quit pressed.
            TeleopError: the device went away.
        """
        if self.device is None:
            raise RuntimeError("TeleopIntervention.bind(spec) must be called before the first read")
        command = self.device.read(state)
        if ESTOP in command.events or STOP in command.events:
            raise InterventionStop(f"{self.name}: {'e-stop' if ESTOP in command.events else 'quit'} pressed")
        self.active = command.intervention
        return command.action if command.intervention and command.action.size else None

    def close(self) -> None:
        """Stop the device (restores the terminal for the keyboard); ``bind`` starts it again."""
        if self.device is not None:
            self.device.stop()
