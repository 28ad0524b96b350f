"""What every teleoperation device gives: a command per read, and the operator's events.

A device is read once per control step with the latest robot-server state message; it answers a
``TeleopCommand``: the action to send (shaped like the robot spec's ``action``), whether the
operator is intervening (online fine-tuning labels those steps, as in RLIF / HIL-SERL), and the
operator events of this read (end the episode, record it again, stop, e-stop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

# Operator events (``TeleopCommand.events``), a fixed vocabulary the recorder and the teleop loop
# act on.
END_EPISODE = "end_episode"
"""Keep the episode just recorded and start the next one."""
RERECORD = "rerecord"
"""Discard the episode being recorded and record it again."""
STOP = "stop"
"""End the teleoperation session (the last episode is kept)."""
ESTOP = "estop"
"""Trip the robot server's latched e-stop now."""
EVENTS = (END_EPISODE, RERECORD, STOP, ESTOP)

# Logical buttons a device reports as held (``ButtonTracker``): the episode events above plus
# three that act inside the device.
GRIPPER = "gripper"
"""Toggle the gripper between open and closed."""
INTERVENTION = "intervention"
"""The intervention button (held, or toggled: ``TeleopConfig.intervention``)."""
JOINT_BANK = "joint_bank"
"""Move the device's axes to the next group of joints (joint mode)."""
BUTTONS = (GRIPPER, INTERVENTION, JOINT_BANK) + EVENTS

TELEOP_EXTRA = "teleop"


class TeleopError(RuntimeError):
    """A teleop device cannot be used: it is not connected, its library is not installed, or it
    went away while in use. The message names the device and what to do."""


class MappingError(ValueError):
    """A robot spec whose action a device cannot be mapped to (the message says why)."""


def missing_library(device: str, module: str, error: BaseException) -> TeleopError:
    """The ``TeleopError`` for a device whose Python library does not import.

    Args:
        device: the device name (``"spacemouse"``, ``"gamepad"``).
        module: the module that failed to import.
        error: the ImportError (chained by the caller with ``raise ... from error``).
    """
    return TeleopError(
        f"{device}: the Python library {module!r} is not installed ({error}); "
        f"install it with: pip install 'tether[{TELEOP_EXTRA}]'"
    )


@dataclass(frozen=True)
class TeleopCommand:
    """One read of a teleop device.

    Attributes:
        action: float32 array of shape ``spec.action.shape`` in the action's units, within its
            limits.
        intervention: the operator is intervening (button held, or toggled on).
        events: operator events of this read, each one of ``EVENTS``, in the order they came.
    """

    action: np.ndarray
    intervention: bool = False
    events: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        unknown = [e for e in self.events if e not in EVENTS]
        if unknown:
            raise ValueError(f"unknown teleop events {unknown}; known: {list(EVENTS)}")


@runtime_checkable
class TeleopDevice(Protocol):
    """A teleoperation device (keyboard, SpaceMouse, gamepad, leader arm).

    Use it as ``start()``, then ``read(state)`` once per control step, then ``stop()`` (always,
    also on errors: the devices here are context managers that do that).
    """

    name: str

    def start(self) -> None:
        """Open the device. Raises ``TeleopError`` when it is missing or its library is not
        installed."""

    def read(self, state: dict) -> TeleopCommand:
        """The command for this step, given the latest robot-server state message (its
        ``state["observation"]["observation.state"]`` is used by joint mappings). Never blocks
        for more than a few milliseconds. Raises ``TeleopError`` if the device went away."""

    def stop(self) -> None:
        """Release the device (and restore what ``start`` changed, e.g. the terminal mode)."""


class ButtonTracker:
    """Turns the set of logical buttons held at each read into events, toggles and the
    intervention flag.

    An event fires on a button's press (rising edge), once however long it is held, so a
    terminal's key autorepeat or a slow release never repeats an episode event.

    Args:
        intervention: ``"hold"``: intervening while the button is held; ``"toggle"``: each press
            flips it (for devices without release events, like a terminal).
    """

    def __init__(self, intervention: str = "hold"):
        if intervention not in ("hold", "toggle"):
            raise ValueError(f"intervention must be 'hold' or 'toggle', got {intervention!r}")
        self.mode = intervention
        self.held: frozenset[str] = frozenset()
        self.intervention = False

    def update(self, held: set[str] | frozenset[str], tapped: set[str] = frozenset()) -> list[str]:
        """Record this read's held buttons; returns the pressed ones (in ``BUTTONS`` order).

        Args:
            held: buttons down now.
            tapped: buttons pressed and released since the last read (counted as pressed).
        """
        unknown = set(held) - set(BUTTONS) | set(tapped) - set(BUTTONS)
        if unknown:
            raise ValueError(f"unknown buttons {sorted(unknown)}; known: {list(BUTTONS)}")
        pressed = [b for b in BUTTONS if (b in held and b not in self.held) or b in tapped]
        self.held = frozenset(held)
        if self.mode == "hold":
            self.intervention = INTERVENTION in held or INTERVENTION in tapped
        elif INTERVENTION in pressed:
            self.intervention = not self.intervention
        return pressed
