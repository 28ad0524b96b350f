"""Hardware driver for arms built from DYNAMIXEL X-series servos (Koch v1.1, ALOHA-style and other
low-cost arms), through ROBOTIS' ``dynamixel_sdk`` (Protocol 2.0).

Observation ``observation.state``: joint positions (rad). Action: goal joint positions (rad),
bounded by the configured joint limits; the safety layer bounds the joints' commanded speed to
``max_velocity_rad_s`` (``SafetySpec.max_velocity``: a change of at most that / the loop's rate
per tick). All joints are read with one Sync Read of Present Position and
commanded with one Sync Write of Goal Position per tick; the logic is shared with the Feetech
driver (``tether.robot.drivers.servo_arm``).

Calibration is optional here: without a ``calibration`` file, 0 rad is each servo's centre tick
2048 (arms assembled with the servos' horn marks at their centre, as Koch's instructions do);
with one (``tether calibrate --robot dynamixel``) the homing offsets and ranges it recorded are
written to the servos and the ranges become the joint limits; a named file that does not exist
is refused.

Set-up (Linux): install ``pip install 'tether[dynamixel]'``; plug in the U2D2 (or any USB-serial
adapter), find it under ``/dev/serial/by-id/``; make it yours (``sudo usermod -aG dialout $USER``)
and set its latency timer to 1 ms (``echo 1 | sudo tee
/sys/bus/usb-serial/devices/ttyUSB0/latency_timer``); give each servo a unique ID and the same baud
rate with DYNAMIXEL Wizard; write the IDs, limits and home pose into a ``DynamixelConfig``.
Control table addresses: ROBOTIS e-Manual, X-series (XL330, XL430, XM430, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.robot.drivers.servo_arm import (  # noqa: F401 (to_ticks, to_radians: this driver's API)
    CENTER_TICK, ServoArm, ServoArmConfig, ServoBusError, to_radians, to_ticks,
)

# X-series control table (ROBOTIS e-Manual): address, size in bytes. EEPROM below 64.
OPERATING_MODE = (11, 1)
HOMING_OFFSET = (20, 4)  # signed; Present Position = Actual Position + Homing Offset
MAX_POSITION_LIMIT = (48, 4)
MIN_POSITION_LIMIT = (52, 4)
TORQUE_ENABLE = (64, 1)
GOAL_POSITION = (116, 4)
PRESENT_POSITION = (132, 4)
POSITION_CONTROL_MODE = 3
MAX_OFFSET = 1_044_479


class DynamixelError(ServoBusError):
    """The servo bus failed: port missing, a servo not answering, a communication error."""


@dataclass
class DynamixelConfig(ServoArmConfig):
    """A DYNAMIXEL arm (the fields of ``ServoArmConfig``); ``calibration`` is optional."""

    robot_type: str = "dynamixel-arm"


def _signed32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


class DynamixelArm(ServoArm):
    """Position-controlled DYNAMIXEL arm (see module docstring and ``ServoArm``).

    Raises (from ``connect`` and each bus operation):
        DynamixelError: naming the port or the servo ID that failed.
    """

    error = DynamixelError
    kind = "dynamixel"
    requires_calibration = False
    TORQUE_ENABLE = TORQUE_ENABLE
    GOAL_POSITION = GOAL_POSITION
    PRESENT_POSITION = PRESENT_POSITION
    HOMING_OFFSET = HOMING_OFFSET
    MIN_POSITION_LIMIT = MIN_POSITION_LIMIT
    MAX_POSITION_LIMIT = MAX_POSITION_LIMIT
    FULL_RANGE = (0, 4095)

    def _sdk(self):
        import dynamixel_sdk

        return dynamixel_sdk

    def _packet_handler(self, sdk):
        return sdk.PacketHandler(2.0)

    def _sync_read_tx(self) -> int:
        ids = list(self.config.ids)
        return self._packet.syncReadTx(self._port, *self.PRESENT_POSITION, ids, len(ids), False)

    def _decode_position(self, data: list[int]) -> int:
        return _signed32(int.from_bytes(bytes(data[:4]), "little"))

    def _encode_offset(self, offset: int) -> int:
        return offset & 0xFFFFFFFF

    def _decode_offset(self, value: int) -> int:
        return _signed32(value)

    def zero_offset(self, raw_tick: int, servo_id: int) -> int:
        offset = CENTER_TICK - raw_tick
        if abs(offset) > MAX_OFFSET:
            raise self.error(f"servo {servo_id} ({self._joint(servo_id)}) reads tick {raw_tick}: its homing offset "
                             f"would be {offset}, beyond +-{MAX_OFFSET}; reboot the servo and record again")
        return offset

    def _prepare(self, servo_id: int) -> None:
        self._write(servo_id, OPERATING_MODE, POSITION_CONTROL_MODE)
