"""Hardware driver for arms built from Feetech STS/SMS servos (LeRobot's SO-100 / SO-101 follower
and leader arms, STS3215), through Feetech's own SDK (``feetech-servo-sdk``, import
``scservo_sdk``; the STS/SMS protocol: ``0xFF 0xFF ID LEN INSTR PARAMS CHECKSUM``, checksum
``~sum & 0xFF``, little-endian words).

Observation ``observation.state``: joint positions (rad, 0 at the calibrated zero pose). Action:
goal joint positions (rad) within the calibrated ranges (and the config's ``low``/``high``); the
safety layer bounds the joints' speed to ``max_velocity_rad_s``. All joints are read with one
Sync Read of Present Position (address 56) and commanded with one Sync Write of Goal Position
(address 42) per tick; the logic is shared with the DYNAMIXEL driver
(``tether.robot.drivers.servo_arm``).

The arm must be calibrated first (``tether calibrate --robot feetech``): the servos of an SO-101
are mounted at arbitrary angles, so without homing offsets a joint angle means nothing; the
driver refuses to connect an uncalibrated arm, naming the file to create.

Faults, each a ``FeetechError`` naming the port and the servo, after which ``tether serve`` stops:
    a servo that does not answer (ping at connect, or a Sync Read reply missing 3 times): the
        other servos hold their last goal;
    a corrupt status packet (checksum mismatch) 3 times in a row: the arm holds its last goal;
    a servo's error status (overload, overheat, over-current, voltage, angle sensor): that servo's
        protection releases its torque (the faults selected by its Unloading Condition, address
        19; overload among them by default), the others hold their goal;
    the port vanished (adapter unplugged): nothing reaches the servos, which hold their last goal.
With ``torque_off_on_disconnect`` every servo still reachable is released when the server stops.

Set-up (Linux): ``pip install 'tether[feetech]'``; plug in the bus adapter (the SO-101's Waveshare
board shows as ``/dev/ttyACM0``, find it under ``/dev/serial/by-id/``); make it yours (``sudo
usermod -aG dialout $USER``); for an FTDI adapter set its latency timer to 1 ms (``echo 1 | sudo
tee /sys/bus/usb-serial/devices/ttyUSB0/latency_timer``); give each servo a unique ID at the same
baud rate (1 Mbit/s); calibrate; write port, IDs and the calibration file into a JSON config.
Control table addresses: Feetech STS/SMS memory table (as LeRobot's ``feetech/tables.py`` lists).
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.robot.drivers.servo_arm import CENTER_TICK, ServoArm, ServoArmConfig, ServoBusError

# STS/SMS control table (Feetech memory table): address, size in bytes. EEPROM below 40.
RETURN_DELAY_TIME = (7, 1)  # 2 us per unit; 0: answer at once (the default 250 costs 0.5 ms per servo)
MIN_POSITION_LIMIT = (9, 2)
MAX_POSITION_LIMIT = (11, 2)
HOMING_OFFSET = (31, 2)  # sign-magnitude, sign bit 11; Present Position = Actual - Homing Offset
OPERATING_MODE = (33, 1)
TORQUE_ENABLE = (40, 1)
GOAL_POSITION = (42, 2)
LOCK = (55, 1)  # 1: EEPROM writes are refused
PRESENT_POSITION = (56, 2)
POSITION_MODE = 0
STS3215_MODEL = 777
OFFSET_SIGN_BIT = 11
MAX_OFFSET = (1 << OFFSET_SIGN_BIT) - 1

SO101_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


class FeetechError(ServoBusError):
    """The Feetech servo bus failed: port missing or vanished, a servo not answering or reporting
    an error, a corrupt packet, or an uncalibrated arm."""


@dataclass
class FeetechConfig(ServoArmConfig):
    """A Feetech arm (see ``ServoArmConfig``); defaults are an SO-101's: servo IDs 1-6 named as
    LeRobot names them, 1 Mbit/s. ``calibration`` is required (``tether calibrate``)."""

    ids: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    joint_names: tuple[str, ...] = SO101_JOINTS
    robot_type: str = "so101"

    def __post_init__(self) -> None:
        if tuple(self.joint_names) == SO101_JOINTS and len(self.ids) != len(SO101_JOINTS):
            self.joint_names = ()  # other IDs than the SO-101's six: joint_<id> unless named
        super().__post_init__()


def _sign_magnitude(value: int, bit: int) -> int:
    return (-value) | (1 << bit) if value < 0 else value


class FeetechArm(ServoArm):
    """Position-controlled Feetech STS/SMS arm (see the module docstring and ``ServoArm``).

    Raises (from ``connect`` and each bus operation):
        FeetechError: naming the port, or the servo ID and joint that failed.
    """

    error = FeetechError
    kind = "feetech"
    requires_calibration = True
    TORQUE_ENABLE = TORQUE_ENABLE
    GOAL_POSITION = GOAL_POSITION
    PRESENT_POSITION = PRESENT_POSITION
    HOMING_OFFSET = HOMING_OFFSET
    MIN_POSITION_LIMIT = MIN_POSITION_LIMIT
    MAX_POSITION_LIMIT = MAX_POSITION_LIMIT
    FULL_RANGE = (0, 4095)

    def _sdk(self):
        import scservo_sdk

        return scservo_sdk

    def _packet_handler(self, sdk):
        return sdk.PacketHandler(0)  # protocol end 0: STS/SMS little-endian words (1 is SCS)

    def _sync_read_tx(self) -> int:
        ids = list(self.config.ids)
        return self._packet.syncReadTx(self._port, *self.PRESENT_POSITION, ids, len(ids))

    def _decode_position(self, data: list[int]) -> int:
        return data[0] | data[1] << 8

    def _encode_offset(self, offset: int) -> int:
        return _sign_magnitude(offset, OFFSET_SIGN_BIT)

    def _decode_offset(self, value: int) -> int:
        return -(value & MAX_OFFSET) if value & (1 << OFFSET_SIGN_BIT) else value & MAX_OFFSET

    def zero_offset(self, raw_tick: int, servo_id: int) -> int:
        offset = raw_tick - CENTER_TICK
        if abs(offset) > MAX_OFFSET:
            raise self.error(f"servo {servo_id} ({self._joint(servo_id)}) reads tick {raw_tick} at the zero pose, "
                             "on its encoder's wrap: move that joint a little and record again")
        return offset

    def _eeprom_write(self, servo_id: int, writes) -> None:
        self._write(servo_id, LOCK, 0)
        try:
            for item, value in writes:
                self._write(servo_id, item, value)
        finally:
            self._write(servo_id, LOCK, 1)

    def _prepare(self, servo_id: int) -> None:
        wanted = [(OPERATING_MODE, POSITION_MODE), (RETURN_DELAY_TIME, 0)]
        changes = [(item, value) for item, value in wanted if self._read(servo_id, item) != value]
        if changes:
            self._eeprom_write(servo_id, changes)

    def _status_error(self, error: int) -> str:
        sdk = self._sdk()
        names = [(sdk.ERRBIT_VOLTAGE, "input voltage out of range"), (sdk.ERRBIT_ANGLE, "angle sensor error"),
                 (sdk.ERRBIT_OVERHEAT, "overheat"), (sdk.ERRBIT_OVERELE, "over-current"),
                 (sdk.ERRBIT_OVERLOAD, "overload")]
        found = [text for bit, text in names if error & bit]
        if not found:
            return f"unknown error bits 0x{error:02x}"
        return " and ".join(found) + ": its protection releases its torque"
