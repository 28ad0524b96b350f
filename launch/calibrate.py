"""``tether calibrate``: record a servo arm's homing offsets and joint ranges with an operator.

::

    tether calibrate --robot feetech --robot-config so101.json --out so101_calib.json

The arm's torque is off throughout. The operator holds the arm in its zero pose (the middle of
every joint's range; LeRobot's SO-101 guide shows it) and presses Enter; then moves each joint
through its whole range, one after the other, and presses Enter again. The file written is what
the driver's ``calibration`` setting names (``tether.robot.drivers.calibration``); the offsets
and ranges are also written to the servos.
"""

from __future__ import annotations

import queue
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tether.launch import UsageError


@dataclass
class CalibrateCommand:
    """Calibrate a servo arm (Feetech SO-100/SO-101 or DYNAMIXEL): homing offsets and joint ranges."""

    robot: Literal["feetech", "dynamixel"]
    """The arm's driver, as for tether serve --robot."""
    robot_config: Path
    """The arm's JSON config (port, ids, joint_names, ...), as for tether serve --robot-config."""
    out: Path = Path("calib.json")
    """Where to write the calibration; name it in the robot config as "calibration"."""
    force: bool = False
    """Overwrite --out if it exists."""
    sample_hz: float = 100.0
    """How often the joints are read while the operator moves them (Hz)."""


class EnterKey:
    """Lines typed on ``stream`` (the operator's Enter), read by a thread so the arm can be
    sampled while waiting."""

    def __init__(self, stream) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self._stream = stream
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            line = self._stream.readline()
            self._lines.put(line)
            if not line:
                return

    @staticmethod
    def _check(line: str) -> None:
        if not line:
            raise UsageError("the input closed before Enter was pressed: run tether calibrate in a terminal")

    def wait(self) -> None:
        """Block until Enter; UsageError if the input closed first."""
        self._check(self._lines.get())

    def pressed(self) -> bool:
        """Whether Enter was pressed since the last call; UsageError if the input closed."""
        try:
            line = self._lines.get_nowait()
        except queue.Empty:
            return False
        self._check(line)
        return True


def main(cmd: CalibrateCommand, stdin=None, say=None) -> None:
    """Entry point of ``tether calibrate`` (see the module docstring).

    Raises:
        UsageError: --out exists (without --force), a bad config, a bad --sample-hz, or the
            input closed before Enter.
        ServoBusError: the bus failed, or the operator's sweep was not a calibration (a joint
            not moved, a zero pose at an end of a range).
    """
    from tether.launch.serve import make_hardware_robot
    from tether.robot.drivers.calibration import record_calibration

    say = say or (lambda text: print(text, flush=True))
    if cmd.out.exists() and not cmd.force:
        raise UsageError(f"{cmd.out} exists: pass --force to overwrite it")
    if not 0 < cmd.sample_hz < float("inf"):
        raise UsageError(f"--sample-hz must be > 0, got {cmd.sample_hz}")
    arm = make_hardware_robot(cmd.robot, cmd.robot_config, passive=True, calibration=None)
    enter = EnterKey(stdin or sys.stdin)
    names = arm.config.joint_names

    def zero_pose_ready() -> None:
        say(f"Calibrating the {cmd.robot} arm on {arm.config.port} ({', '.join(names)}); its torque is off.")
        say("Hold the arm in its zero pose (every joint in the middle of its range) and press Enter.")
        enter.wait()

    prompted = []

    def sweep_done() -> bool:
        if not prompted:
            prompted.append(True)
            say("Zero pose recorded. Now move every joint through its whole range, one at a time, "
                "and press Enter when done.")
        return enter.pressed()

    calibration = record_calibration(arm, zero_pose_ready, sweep_done, 1.0 / cmd.sample_hz)
    for name, joint in calibration.joints.items():
        low, high = ((t - 2048) * 360 / 4096 for t in (joint.range_min, joint.range_max))
        say(f"  {name} (servo {joint.id}): offset {joint.homing_offset} ticks, range {low:+.1f} .. {high:+.1f} deg")
    cmd.out.parent.mkdir(parents=True, exist_ok=True)
    calibration.save(cmd.out)
    say(f"wrote {cmd.out}; set \"calibration\": \"{cmd.out}\" in {cmd.robot_config}")
