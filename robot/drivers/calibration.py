"""Calibration of a serial-bus servo arm: each servo's homing offset (so the arm's zero pose reads
the centre tick 2048) and its range of motion (ticks, in that calibrated frame), recorded while an
operator moves the arm by hand, stored as JSON and read by the driver (``calibration`` in its
config), which writes them to the servos' Homing Offset and Min/Max Position Limit registers.

As LeRobot's SO-100/SO-101 calibration does: the zero pose is set with the arm held in the middle
of its range, then each joint is moved through its whole range while the driver records the
extremes. The joint limits in the robot spec become the recorded range.

File (``calib.json``)::

    {"robot": "feetech", "port": "/dev/ttyACM0", "ticks_per_rev": 4096, "centre_tick": 2048,
     "joints": {"shoulder_pan": {"id": 1, "homing_offset": 953, "range_min": 1020, "range_max": 3110}, ...}}
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tether.robot.drivers.servo_arm import CENTER_TICK, TICKS_PER_REV, ServoArm, to_radians

MIN_SPAN_TICKS = 100  # a joint moved less than this (about 9 degrees) was not swept


@dataclass
class JointCalibration:
    """One servo: ``homing_offset`` (ticks, the register's signed value) and its range of motion
    ``range_min`` .. ``range_max`` (ticks, as the servo reads with that offset)."""

    id: int
    homing_offset: int
    range_min: int
    range_max: int


@dataclass
class Calibration:
    """A calibrated arm: the driver kind (``feetech``, ``dynamixel``), the port it was recorded
    on, and one ``JointCalibration`` per joint name."""

    robot: str
    port: str
    joints: dict[str, JointCalibration]

    def limits(self, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Joint limits (rad) of ``names``: the recorded ranges."""
        low = to_radians([self.joints[n].range_min for n in names])
        high = to_radians([self.joints[n].range_max for n in names])
        return low.astype(np.float64), high.astype(np.float64)

    def offsets(self) -> dict[int, int]:
        """Servo ID -> homing offset (ticks)."""
        return {j.id: j.homing_offset for j in self.joints.values()}

    def ranges(self) -> dict[int, tuple[int, int]]:
        """Servo ID -> (range_min, range_max) (ticks)."""
        return {j.id: (j.range_min, j.range_max) for j in self.joints.values()}

    def check(self, arm: ServoArm) -> None:
        """Check this calibration fits ``arm``'s driver, joints and servo IDs.

        Raises:
            ServoBusError (the arm's error class): naming what differs and the file to redo.
        """
        cfg = arm.config
        ours = {name: j.id for name, j in self.joints.items()}
        theirs = dict(zip(cfg.joint_names, cfg.ids))
        if self.robot != arm.kind or ours != theirs:
            raise arm.error(
                f"{arm.calibration_path} was recorded for a {self.robot} arm with joints {ours}, not this "
                f"{arm.kind} arm's {theirs}: recalibrate with `tether calibrate --robot {arm.kind}`"
            )

    def to_json(self) -> dict:
        """The file's content (see the module docstring)."""
        return {"robot": self.robot, "port": self.port, "ticks_per_rev": TICKS_PER_REV,
                "centre_tick": CENTER_TICK, "joints": {n: asdict(j) for n, j in self.joints.items()}}

    def save(self, path: Path) -> None:
        """Write the JSON file."""
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path, arm: ServoArm) -> Calibration:
        """Read a calibration file for ``arm``.

        Raises:
            ServoBusError (the arm's error class): the file is not a calibration (names the file
                and the problem), or its ranges do not hold the zero pose.
        """
        try:
            data = json.loads(Path(path).read_text())
            if data.get("ticks_per_rev", TICKS_PER_REV) != TICKS_PER_REV or data.get("centre_tick", CENTER_TICK) != CENTER_TICK:
                raise ValueError(f"ticks_per_rev / centre_tick must be {TICKS_PER_REV} / {CENTER_TICK}")
            joints = {str(n): JointCalibration(**{k: int(v) for k, v in j.items()}) for n, j in data["joints"].items()}
            calibration = cls(str(data["robot"]), str(data.get("port", "")), joints)
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            raise arm.error(f"{path} is not a calibration file ({type(e).__name__}: {e}); "
                            f"recalibrate with `tether calibrate --robot {arm.kind}`") from e
        for name, j in joints.items():
            if not j.range_min < CENTER_TICK < j.range_max:
                raise arm.error(f"{path}: joint {name}'s range {j.range_min}..{j.range_max} does not hold its "
                                f"zero pose (tick {CENTER_TICK}); recalibrate")
        missing = [n for n in arm.config.joint_names if n not in joints]
        if missing:
            raise arm.error(f"{path} has no calibration of joints {missing}; recalibrate with "
                            f"`tether calibrate --robot {arm.kind}`")
        return calibration


def record_calibration(
    arm: ServoArm,
    zero_pose_ready: Callable[[], None],
    sweep_done: Callable[[], bool],
    sample_s: float = 0.01,
) -> Calibration:
    """Record a calibration with an operator, and write it to the servos.

    The arm's torque is turned off and its offsets cleared; ``zero_pose_ready()`` returns once the
    operator holds the arm in its zero pose (the middle of each joint's range): the homing
    offsets are set there. Then positions are sampled every ``sample_s`` (s) until
    ``sweep_done()`` is true, while the operator moves each joint through its whole range; the
    extremes become the ranges. The bus is closed at the end.

    Raises:
        ServoBusError (the arm's error class): the bus failed; a joint was moved less than
            ``MIN_SPAN_TICKS`` (names it), had its zero pose at an end of its range, or jumped by half a turn between two samples (it
            went past half a turn from its zero pose).
    """
    cfg = arm.config
    arm.open_bus()
    try:
        arm.write_calibration({i: 0 for i in cfg.ids})  # raw readings over the full range
        zero_pose_ready()
        raw = arm.read_ticks()
        offsets = {i: arm.zero_offset(int(t), i) for i, t in zip(cfg.ids, raw)}
        arm.write_calibration(offsets)
        last = lo = hi = arm.read_ticks()
        while not sweep_done():
            ticks = arm.read_ticks()
            jumped = np.abs(ticks - last) > TICKS_PER_REV // 2
            if jumped.any():
                name = cfg.joint_names[int(np.argmax(jumped))]
                raise arm.error(f"joint {name} went past half a turn from its zero pose (its reading wrapped "
                                "around); hold the zero pose in the middle of its range and record again")
            last, lo, hi = ticks, np.minimum(lo, ticks), np.maximum(hi, ticks)
            time.sleep(sample_s)
        spans = hi - lo
        small = [f"{n} ({int(s)} ticks)" for n, s in zip(cfg.joint_names, spans) if s < MIN_SPAN_TICKS]
        if small:
            raise arm.error(f"joints {', '.join(small)} were not moved through their range (less than "
                            f"{MIN_SPAN_TICKS} ticks): record again and move every joint end to end")
        ends = [n for n, a, b in zip(cfg.joint_names, lo, hi) if not a < CENTER_TICK < b]
        if ends:
            raise arm.error(f"joints {ends} were at an end of their range in the zero pose: hold the zero "
                            "pose in the middle of every joint's range and record again")
        joints = {n: JointCalibration(i, offsets[i], int(a), int(b))
                  for n, i, a, b in zip(cfg.joint_names, cfg.ids, lo, hi)}
        calibration = Calibration(arm.kind, cfg.port, joints)
        arm.write_calibration(calibration.offsets(), calibration.ranges())
        return calibration
    finally:
        arm._close()
