"""DYNAMIXEL X-series servos on an emulated serial bus, speaking Protocol 2.0 (ROBOTIS e-Manual):
packets ``0xFF 0xFF 0xFD 0x00 ID LEN_L LEN_H INSTR PARAMS... CRC_L CRC_H`` with byte stuffing
(``0xFF 0xFF 0xFD`` in the body is followed by an extra ``0xFD``) and CRC-16 (polynomial 0x8005);
ping, read, write, sync read (each listed servo answers in turn) and sync write (no answer).

Control table (X-series): operating mode 11, homing offset 20 (signed 32-bit; ``Present
Position = Actual Position + Homing Offset``), max/min position limit 48/52, torque enable 64,
goal position 116, present position 132. EEPROM (addresses below 64) cannot be written while the
torque is on (the status reports access error 7). Present Position moves towards the goal (within
the position limits) by at most ``ticks_per_read`` per read while the torque is on.
"""

from __future__ import annotations

from tether.robot.drivers.emulators.pty_bus import PtyBus

ACCESS_ERROR = 0x07


def crc16(data: bytes) -> int:
    """CRC-16/BUYPASS (polynomial 0x8005), as the Protocol 2.0 e-Manual specifies."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Byte stuffing: an ``0xFD`` after each ``0xFF 0xFF 0xFD`` in a packet's body."""
    out = bytearray()
    for b in body:
        out.append(b)
        if out[-3:] == b"\xff\xff\xfd":
            out.append(0xFD)
    return bytes(out)


def _int(data: bytes) -> int:
    return int.from_bytes(data, "little", signed=True)


class ServoChain(PtyBus):
    """X-series servos with IDs ``ids`` behind a pty: control tables of 256 bytes, shafts at
    ``start_ticks`` (actual position, before the homing offset).

    Faults: ``remove(id)`` (the servo stops answering), ``drop(id, n)`` (its next n replies are
    lost on the bus), ``vanish()`` (the port disappears).
    """

    def __init__(self, ids, start_ticks=2048, ticks_per_read=40):
        super().__init__()
        self.tables = {i: bytearray(256) for i in ids}
        self.actual = {i: int(start_ticks) for i in ids}
        for i, table in self.tables.items():
            table[48:52] = (4095).to_bytes(4, "little")
            table[132:136] = int(start_ticks).to_bytes(4, "little", signed=True)
            table[116:120] = table[132:136]
        self.ticks_per_read = ticks_per_read
        self.absent: set[int] = set()
        self.dropped: dict[int, int] = {}
        self.goals: dict[int, list[int]] = {i: [] for i in ids}

    def remove(self, dxl_id: int) -> None:
        """The servo stops answering (a cut cable, a dead servo)."""
        with self.lock:
            self.absent.add(dxl_id)

    def drop(self, dxl_id: int, replies: int) -> None:
        """Lose the servo's next ``replies`` replies (noise on the bus; a reply that came late)."""
        with self.lock:
            self.dropped[dxl_id] = replies

    def move_to(self, dxl_id: int, actual_tick: int) -> None:
        """Move the shaft by hand (an operator moving a limp arm)."""
        with self.lock:
            self.actual[dxl_id] = int(actual_tick)
            self._present(dxl_id)

    def torque(self, dxl_id: int) -> bool:
        with self.lock:
            return bool(self.tables[dxl_id][64])

    def _present(self, dxl_id: int) -> int:
        table = self.tables[dxl_id]
        present = self.actual[dxl_id] + _int(table[20:24])
        table[132:136] = present.to_bytes(4, "little", signed=True)
        return present

    def read(self, dxl_id, addr, size):
        table = self.tables[dxl_id]
        if addr == 132 and table[64]:
            goal = _int(table[116:120])
            now = self._present(dxl_id)
            self.actual[dxl_id] += max(-self.ticks_per_read, min(self.ticks_per_read, goal - now))
        self._present(dxl_id)
        return bytes(table[addr:addr + size])

    def write(self, dxl_id, addr, data) -> int:
        """Write into a control table; the status error (0: none)."""
        table = self.tables[dxl_id]
        if addr < 64 and table[64]:
            return ACCESS_ERROR
        table[addr:addr + len(data)] = data
        if addr <= 116 < addr + len(data):
            low, high = _int(table[52:56]), _int(table[48:52])
            goal = max(low, min(high, _int(table[116:120])))
            table[116:120] = goal.to_bytes(4, "little", signed=True)
            self.goals[dxl_id].append(goal)
        self._present(dxl_id)
        return 0

    def status(self, dxl_id, params=b"", error=0):
        body = bytes([0xFF, 0xFF, 0xFD, 0x00, dxl_id]) + (len(params) + 4).to_bytes(2, "little")
        body += bytes([0x55, error]) + params
        stuffed = body[:7] + stuff(body[7:])
        if len(stuffed) != len(body):
            stuffed = stuffed[:5] + (len(stuffed) - 7 + 2).to_bytes(2, "little") + stuffed[7:]
        self.reply(stuffed + crc16(stuffed).to_bytes(2, "little"))

    def feed(self, buf: bytearray) -> bytearray:
        while True:
            start = buf.find(b"\xff\xff\xfd\x00")
            if start < 0 or len(buf) < start + 7:
                return buf
            length = int.from_bytes(buf[start + 5:start + 7], "little")
            end = start + 7 + length
            if len(buf) < end:
                return buf
            packet, buf = bytes(buf[start:end]), buf[end:]
            if crc16(packet[:-2]) != int.from_bytes(packet[-2:], "little"):
                continue  # a servo ignores a packet it cannot trust
            self.handle(packet[4], packet[7], packet[8:-2].replace(b"\xff\xff\xfd\xfd", b"\xff\xff\xfd"))

    def _answers(self, dxl_id: int) -> bool:
        if self.dropped.get(dxl_id, 0) > 0:
            self.dropped[dxl_id] -= 1
            return False
        return dxl_id in self.tables and dxl_id not in self.absent

    def handle(self, dxl_id, inst, params):
        """Execute one instruction packet."""
        self.packets += 1
        if inst == 0x01 and self._answers(dxl_id):  # ping: model XL430-W250 (1060), firmware 46
            self.status(dxl_id, (1060).to_bytes(2, "little") + bytes([46]))
        elif inst == 0x02 and self._answers(dxl_id):  # read
            addr, size = int.from_bytes(params[:2], "little"), int.from_bytes(params[2:4], "little")
            self.status(dxl_id, self.read(dxl_id, addr, size))
        elif inst == 0x03 and self._answers(dxl_id):  # write
            addr = int.from_bytes(params[:2], "little")
            self.status(dxl_id, error=self.write(dxl_id, addr, params[2:]))
        elif inst == 0x82:  # sync read: each listed servo answers in turn
            addr, size = int.from_bytes(params[:2], "little"), int.from_bytes(params[2:4], "little")
            for i in params[4:]:
                if self._answers(i):
                    self.status(i, self.read(i, addr, size))
        elif inst == 0x83:  # sync write: no answer
            addr, size = int.from_bytes(params[:2], "little"), int.from_bytes(params[2:4], "little")
            for k in range(4, len(params), size + 1):
                if self._answers(params[k]):
                    self.write(params[k], addr, params[k + 1:k + 1 + size])

    def ticks(self, item):
        """A 4-byte item (e.g. 116, goal position) of every servo, in ID order."""
        with self.lock:
            return [_int(t[item:item + 4]) for t in self.tables.values()]


def zero_pose_calibration(chain: ServoChain, joint_names, span_ticks: int = 1000):
    """The calibration an operator records with the emulated arm held where it is now as its
    zero pose and each joint swept ``span_ticks`` to either side (``Calibration``; save it and
    name it in the arm's config). X-series: ``Present = Actual + Homing Offset``."""
    from tether.robot.drivers.calibration import Calibration, JointCalibration

    with chain.lock:
        joints = {name: JointCalibration(i, 2048 - chain.actual[i], 2048 - span_ticks, 2048 + span_ticks)
                  for name, i in zip(joint_names, chain.tables)}
    return Calibration("dynamixel", chain.port, joints)
