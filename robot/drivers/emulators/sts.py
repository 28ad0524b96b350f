"""Feetech STS/SMS servos (STS3215, as in LeRobot's SO-100 / SO-101) on an emulated serial bus.

Wire protocol (Feetech STS/SMS manual; the same framing as DYNAMIXEL Protocol 1.0):
instruction ``0xFF 0xFF ID LEN INSTR PARAMS... CHECKSUM`` with ``LEN = len(PARAMS) + 2`` and
``CHECKSUM = ~(ID + LEN + INSTR + sum(PARAMS)) & 0xFF``; status ``0xFF 0xFF ID LEN ERROR
PARAMS... CHECKSUM``. Instructions: PING 0x01, READ 0x02 (address, length), WRITE 0x03
(address, data), SYNC READ 0x82 (address, length, IDs: each servo answers in turn), SYNC WRITE
0x83 (address, length, then ID + data per servo; no answer). A packet to the broadcast ID 0xFE is
not answered; a packet whose checksum is wrong is ignored (as a servo does). Words are
little-endian.

Memory table (STS/SMS series, LeRobot's ``STS_SMS_SERIES_CONTROL_TABLE``): model number 3 (777 =
STS3215), ID 5, return delay 7 (2 us units), min/max position limit 9/11, unloading condition
19, homing offset 31 (sign-magnitude, bit 11), operating mode 33, torque enable 40, goal position
42, lock 55 (EEPROM, addresses below 40, is written only while 0), present position 56, status
65, moving 66. ``Present Position = (Actual - Homing Offset) mod 4096``; a goal is clipped to the
position limits, and the servo moves towards it at ``speed_ticks_s`` while its torque is on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tether.robot.drivers.emulators.pty_bus import PtyBus

PING, READ, WRITE, SYNC_READ, SYNC_WRITE = 0x01, 0x02, 0x03, 0x82, 0x83
BROADCAST = 0xFE
OVERLOAD = 0x20  # status error bit 5 (scservo_sdk ERRBIT_OVERLOAD)
EEPROM_END = 40
READ_ONLY = set(range(0, 5)) | set(range(56, 72))


def checksum(body: bytes) -> int:
    """``~sum & 0xFF`` over ID, LEN, INSTR/ERROR and the parameters."""
    return ~sum(body) & 0xFF


@dataclass
class StsServo:
    """One servo: its memory table, where its shaft is (raw encoder tick, a float for smooth
    motion), its fault flags, and every goal written to it (ticks)."""

    table: bytearray
    actual: float
    error: int = 0
    corrupt_replies: int = 0  # replies still to send with a wrong checksum (-1: all)
    goals: list[int] = field(default_factory=list)
    moved_at: float = field(default_factory=time.monotonic)

    def word(self, addr: int) -> int:
        return self.table[addr] | self.table[addr + 1] << 8

    def set_word(self, addr: int, value: int) -> None:
        self.table[addr:addr + 2] = int(value).to_bytes(2, "little")

    @property
    def offset(self) -> int:
        value = self.word(31)
        return -(value & 0x7FF) if value & 0x800 else value & 0x7FF

    @property
    def torque(self) -> bool:
        return bool(self.table[40])

    @property
    def present(self) -> int:
        return int(round(self.actual - self.offset)) % 4096


class STSBus(PtyBus):
    """A chain of STS3215 servos with IDs ``ids`` behind a pty; ``start_ticks`` is each shaft's
    raw encoder tick (one value, or one per servo).

    Faults (each takes effect at the next packet): ``remove(id)`` (the servo stops answering),
    ``corrupt(id, count)`` (its next ``count`` replies, all with None, carry a wrong checksum),
    ``overload(id)`` (its status reports overload and its torque is released, as its overload
    protection does when bit 5 of its unloading condition is set, the factory setting),
    ``vanish()`` (the port disappears). ``bad_checksums`` counts instruction packets it ignored.
    """

    def __init__(self, ids, start_ticks=2048, speed_ticks_s: float = 3000.0, model: int = 777):
        super().__init__()
        starts = list(start_ticks) if hasattr(start_ticks, "__len__") else [start_ticks] * len(ids)
        self.speed = float(speed_ticks_s)
        self.servos: dict[int, StsServo] = {}
        for servo_id, start in zip(ids, starts):
            table = bytearray(256)
            table[0], table[1] = 3, 10  # firmware 3.10
            table[3:5] = model.to_bytes(2, "little")
            table[5], table[7], table[8] = servo_id, 250, 1  # return delay 500 us, answer all
            table[9:11], table[11:13] = (0).to_bytes(2, "little"), (4095).to_bytes(2, "little")
            table[19] = 0x2C  # unloading: overload, over-current, overheat
            table[55] = 1  # EEPROM locked
            servo = StsServo(table, float(start) % 4096)
            servo.set_word(42, servo.present)
            self.servos[servo_id] = servo
            self._refresh(servo)
        self.absent: set[int] = set()
        self.bad_checksums = 0

    # --------------------------------------------------------------------- the test's hands
    def remove(self, servo_id: int) -> None:
        """The servo stops answering (a cut cable, a dead servo)."""
        with self.lock:
            self.absent.add(servo_id)

    def restore(self, servo_id: int) -> None:
        with self.lock:
            self.absent.discard(servo_id)

    def corrupt(self, servo_id: int, count: int | None = None) -> None:
        """The servo's next ``count`` replies (every one with None) have a wrong checksum."""
        with self.lock:
            self.servos[servo_id].corrupt_replies = -1 if count is None else count

    def overload(self, servo_id: int) -> None:
        """The servo is overloaded: status bit 5 set, torque released by its protection."""
        with self.lock:
            servo = self.servos[servo_id]
            self._refresh(servo)
            servo.error |= OVERLOAD
            if servo.table[19] & OVERLOAD:
                servo.table[40] = 0

    def move_to(self, servo_id: int, raw_tick: float) -> None:
        """Move the shaft by hand to a raw encoder tick (an operator moving a limp arm)."""
        with self.lock:
            servo = self.servos[servo_id]
            self._refresh(servo)
            servo.actual = float(raw_tick) % 4096
            self._refresh(servo)

    def present(self, servo_id: int) -> int:
        """Present Position (ticks) as the servo would report it now."""
        with self.lock:
            servo = self.servos[servo_id]
            self._refresh(servo)
            return servo.present

    def goal(self, servo_id: int) -> int:
        with self.lock:
            return self.servos[servo_id].word(42)

    def torque(self, servo_id: int) -> bool:
        with self.lock:
            return self.servos[servo_id].torque

    # ------------------------------------------------------------------------- the servos
    def _refresh(self, servo: StsServo) -> None:
        """Advance the shaft towards the goal for the time since the last refresh."""
        now = time.monotonic()
        if servo.torque:
            present = servo.actual - servo.offset
            present -= 4096 * round((present - 2048) / 4096)  # the servo's frame, 0..4095
            goal = servo.word(42)
            step = self.speed * (now - servo.moved_at)
            present += max(-step, min(step, goal - present))
            servo.actual = (present + servo.offset) % 4096
        servo.moved_at = now
        servo.set_word(56, servo.present)
        servo.table[65] = servo.error
        servo.table[66] = int(servo.torque and servo.present != servo.word(42))

    def _write(self, servo: StsServo, addr: int, data: bytes) -> None:
        self._refresh(servo)
        for i, byte in enumerate(data):
            a = addr + i
            if a in READ_ONLY or a > 255 or (a < EEPROM_END and servo.table[55]):
                continue  # read-only, or EEPROM while locked: ignored
            servo.table[a] = byte
        if addr <= 43 and addr + len(data) > 42:
            low, high = servo.word(9), servo.word(11)
            servo.set_word(42, max(low, min(high, servo.word(42))))  # the position limits
            servo.goals.append(servo.word(42))
        self._refresh(servo)

    def _status(self, servo_id: int, params: bytes = b"") -> None:
        servo = self.servos[servo_id]
        if servo.table[7]:
            time.sleep(servo.table[7] * 2e-6)  # the return delay time
        body = bytes([servo_id, len(params) + 2, servo.error]) + params
        check = checksum(body)
        if servo.corrupt_replies:
            check ^= 0x5A
            servo.corrupt_replies -= servo.corrupt_replies > 0
        self.reply(b"\xff\xff" + body + bytes([check]))

    def _answers(self, servo_id: int) -> bool:
        return servo_id in self.servos and servo_id not in self.absent

    def _read(self, servo_id: int, addr: int, size: int) -> bytes:
        servo = self.servos[servo_id]
        self._refresh(servo)
        return bytes(servo.table[addr:addr + size])

    def feed(self, buffer: bytearray) -> bytearray:
        while True:
            start = buffer.find(b"\xff\xff")
            if start < 0:
                return bytearray(buffer[-1:]) if buffer[-1:] == b"\xff" else bytearray()
            if len(buffer) < start + 4:
                return buffer[start:]
            length = buffer[start + 3]
            end = start + 4 + length
            if len(buffer) < end:
                return buffer[start:]
            packet, buffer = bytes(buffer[start:end]), buffer[end:]
            if length < 2 or checksum(packet[2:-1]) != packet[-1]:
                self.bad_checksums += 1  # a servo ignores a packet it cannot trust
                continue
            self.packets += 1
            self.handle(packet[2], packet[4], packet[5:-1])

    def handle(self, servo_id: int, instruction: int, params: bytes) -> None:
        """Execute one instruction packet (see the module docstring)."""
        if instruction == PING and self._answers(servo_id):
            self._status(servo_id)
        elif instruction == READ and self._answers(servo_id) and len(params) == 2:
            self._status(servo_id, self._read(servo_id, params[0], params[1]))
        elif instruction == WRITE and len(params) >= 2:
            targets = self.servos if servo_id == BROADCAST else [servo_id] if self._answers(servo_id) else []
            for i in targets:
                if self._answers(i):
                    self._write(self.servos[i], params[0], params[1:])
            if servo_id != BROADCAST and targets:
                self._status(servo_id)
        elif instruction == SYNC_READ and len(params) >= 2:
            for i in params[2:]:
                if self._answers(i):
                    self._status(i, self._read(i, params[0], params[1]))
        elif instruction == SYNC_WRITE and len(params) >= 2:
            addr, size = params[0], params[1]
            for k in range(2, len(params) - size, size + 1):
                if self._answers(params[k]):
                    self._write(self.servos[params[k]], addr, params[k + 1:k + 1 + size])


def zero_pose_calibration(bus: STSBus, joint_names, span_ticks: int = 1000, robot: str = "feetech"):
    """The calibration an operator records with the emulated arm held where it is now as its
    zero pose and each joint swept ``span_ticks`` to either side (``tether.robot.drivers.
    calibration.Calibration``; save it and name it in the arm's config)."""
    from tether.robot.drivers.calibration import Calibration, JointCalibration

    with bus.lock:
        joints = {name: JointCalibration(i, int(round(s.actual)) - 2048, 2048 - span_ticks, 2048 + span_ticks)
                  for name, (i, s) in zip(joint_names, bus.servos.items())}
    return Calibration(robot, bus.port, joints)
