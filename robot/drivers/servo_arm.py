"""What the serial-bus servo arm drivers (DYNAMIXEL, Feetech) share: the arm's config, the tick
<-> radian convention, calibration, and the connect / act / hold / e-stop / disconnect logic over
a maker's SDK (ROBOTIS' ``dynamixel_sdk`` and Feetech's ``scservo_sdk`` are the same design: a
``PortHandler``, a ``PacketHandler`` with ping / read / write / sync read, a ``GroupSyncWrite``).

Joint angle convention: ``rad = (tick - 2048) * 2 pi / 4096``: 0 rad at the servo's centre tick.
A calibrated servo has its Homing Offset register set so that the arm's zero pose reads tick
2048 (``tether calibrate``, ``tether.robot.drivers.calibration``), and its recorded range of
motion becomes the joint limits.

Each tick the driver sends one Sync Write of Goal Position and reads one Sync Read of Present
Position (one instruction packet, one status packet per servo). Faults (a servo that does not
answer, a corrupt status packet, a servo's error status, a vanished port) raise the driver's
error class naming the port and the servo; the robot server then stops: the servos still reached
hold their last goal (torque on) unless the config's ``torque_off_on_disconnect`` releases them.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:
    from termios import error as _TermiosError  # pyserial's flush raises it on a vanished tty
except ImportError:  # not a POSIX system
    _TermiosError = OSError

from tether.robot.driver import Observation, Robot, check_reset_args
from tether.robot.spec import Feature, RobotSpec, SafetySpec

TICKS_PER_REV = 4096
CENTER_TICK = 2048


class ServoBusError(ConnectionError):
    """The servo bus failed or refused: port missing or vanished, a servo not answering or
    reporting an error, a corrupt packet, or an arm that must be calibrated first."""


def to_ticks(radians: np.ndarray) -> np.ndarray:
    """Joint angles (rad, 0 at the centre) -> position ticks (4096 per turn, centre 2048)."""
    return np.round(np.asarray(radians) * TICKS_PER_REV / (2 * np.pi) + CENTER_TICK).astype(np.int64)


def to_radians(ticks: np.ndarray) -> np.ndarray:
    """Position ticks -> joint angles (rad, float32); inverse of ``to_ticks``."""
    return ((np.asarray(ticks, np.float64) - CENTER_TICK) * 2 * np.pi / TICKS_PER_REV).astype(np.float32)


@dataclass
class ServoArmConfig:
    """One arm on one serial bus: its port, servo IDs and joint limits.

    Attributes:
        port: serial device, e.g. ``/dev/ttyUSB0``, ``/dev/ttyACM0`` or ``/dev/serial/by-id/...``.
        ids: servo IDs, one per joint, in joint order.
        joint_names: names of the joints (default ``joint_<id>``).
        baudrate: bus baud rate (bit/s).
        low, high: joint limits (rad, 0 at the centre tick 2048); a calibration narrows them to
            the recorded range of motion.
        home: joint positions (rad) the arm moves to at reset (default: stay where it is).
        max_velocity_rad_s: largest joint speed the safety layer lets a command ask for.
        rate_hz: control rate.
        torque_off_on_disconnect: release the servos at disconnect (an arm then falls).
        passive: a leader arm: torque stays off so the operator moves it by hand; it is only
            read, and a command to it raises the driver's error.
        calibration: the JSON file ``tether calibrate`` wrote for this arm (homing offsets and
            ranges); a relative path is relative to the working directory.
        max_episode_steps: an episode is truncated after this many ticks (None: it ends when
            the operator or the client ends it).
    """

    port: str
    ids: tuple[int, ...]
    joint_names: tuple[str, ...] = ()
    baudrate: int = 1_000_000
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()
    home: tuple[float, ...] | None = None
    max_velocity_rad_s: float = 1.0
    rate_hz: float = 50.0
    torque_off_on_disconnect: bool = False
    passive: bool = False
    robot_type: str = "servo-arm"
    tasks: tuple[str, ...] = field(default=())
    calibration: str | None = None
    max_episode_steps: int | None = None

    def __post_init__(self) -> None:
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or null, got {self.max_episode_steps}")
        self.ids = tuple(int(i) for i in self.ids)
        n = len(self.ids)
        if n == 0 or len(set(self.ids)) != n:
            raise ValueError(f"ids must be distinct servo IDs, got {list(self.ids)}")
        self.joint_names = tuple(self.joint_names) or tuple(f"joint_{i}" for i in self.ids)
        self.low = tuple(self.low) or (-np.pi,) * n
        self.high = tuple(self.high) or (np.pi,) * n
        self.tasks = tuple(self.tasks)
        for name in ("joint_names", "low", "high") + (("home",) if self.home else ()):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} servos")

    def limits(self, calibration=None) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Joint limits (rad): the configured ones, narrowed to a calibration's ranges if given."""
        if calibration is None:
            return self.low, self.high
        cal_low, cal_high = calibration.limits(self.joint_names)
        return (tuple(float(v) for v in np.maximum(self.low, cal_low)),
                tuple(float(v) for v in np.minimum(self.high, cal_high)))

    def spec(self, calibration=None) -> RobotSpec:
        """The arm's robot spec: joint positions in rad, limits, rate, joint velocity limit."""
        n = len(self.ids)
        low, high = self.limits(calibration)
        return RobotSpec(
            self.robot_type,
            self.rate_hz,
            {"observation.state": Feature("float32", (n,), self.joint_names, "rad")},
            Feature("float32", (n,), self.joint_names, "rad", low=low, high=high),
            tasks=self.tasks,
            safety=SafetySpec(max_velocity=(self.max_velocity_rad_s,) * n),
        )


class ServoArm(Robot):
    """A position-controlled arm of serial-bus servos driven through its maker's SDK.

    Subclasses name the SDK and the control table; the logic is here. ``connect`` pings every
    servo, turns its torque off, sets position control, applies the calibration, reads where the
    arm is and sets that as its goal before the torque comes on (no jump). ``act`` sends goal
    positions, ``hold`` re-sends the last goal, ``estop`` stops where the arm is now (torque
    stays on: a released arm would fall).

    Raises (from ``connect`` and each bus operation):
        ServoBusError (the subclass's ``error``): naming the port, or the servo ID and joint that
            failed; an arm that must be calibrated and is not, naming the file to create.
    """

    error: type[ServoBusError] = ServoBusError
    kind: str = "servo"  # the --robot name of tether serve / tether calibrate
    requires_calibration = False
    # control table items, (address, size in bytes)
    TORQUE_ENABLE: tuple[int, int]
    GOAL_POSITION: tuple[int, int]
    PRESENT_POSITION: tuple[int, int]
    HOMING_OFFSET: tuple[int, int]
    MIN_POSITION_LIMIT: tuple[int, int]
    MAX_POSITION_LIMIT: tuple[int, int]
    FULL_RANGE: tuple[int, int]  # the position limits of an uncalibrated servo (ticks)
    bus_tries = 3  # a sync read is tried this often before a missing or corrupt reply is an error

    def __init__(self, config: ServoArmConfig):
        from tether.robot.drivers.calibration import Calibration

        self.config = config
        self.calibration = None
        path = self.calibration_path
        if path is not None and path.exists():
            self.calibration = Calibration.load(path, self)
        self.spec = config.spec(self.calibration)
        self._port = None
        self._vanished = False
        self._goal: np.ndarray | None = None
        self._steps = 0  # ticks of this episode

    @property
    def calibration_path(self) -> Path | None:
        """The config's calibration file, or None when it names none."""
        return None if self.config.calibration is None else Path(self.config.calibration)

    # ------------------------------------------------------------------ hooks of each driver
    @abc.abstractmethod
    def _sdk(self):
        """The maker's SDK module (imported here, so tether imports without it)."""

    @abc.abstractmethod
    def _packet_handler(self, sdk):
        """The SDK's packet handler for this bus's protocol."""

    @abc.abstractmethod
    def _sync_read_tx(self) -> int:
        """Send the Sync Read instruction for Present Position of every servo; the SDK's result."""

    @abc.abstractmethod
    def _decode_position(self, data: list[int]) -> int:
        """Present Position bytes of a status packet -> ticks."""

    @abc.abstractmethod
    def _encode_offset(self, offset: int) -> int:
        """A homing offset (ticks, signed) -> the register's value."""

    @abc.abstractmethod
    def _decode_offset(self, value: int) -> int:
        """The Homing Offset register's value -> ticks, signed."""

    @abc.abstractmethod
    def zero_offset(self, raw_tick: int, servo_id: int) -> int:
        """The homing offset that makes a servo reading ``raw_tick`` (with offset 0) read 2048.

        Raises:
            ServoBusError: the offset cannot be stored (names the servo and what to do).
        """

    def _prepare(self, servo_id: int) -> None:
        """Set position control (and anything else the servo needs) while its torque is off."""

    def _eeprom_write(self, servo_id: int, writes: list[tuple[tuple[int, int], int]]) -> None:
        """Write EEPROM items (torque is off); Feetech servos unlock their EEPROM first."""
        for item, value in writes:
            self._write(servo_id, item, value)

    def _status_error(self, error: int) -> str:
        """A status packet's error byte in words."""
        return self._packet.getRxPacketError(error)

    # ------------------------------------------------------------------------------ the bus
    def _joint(self, servo_id: int) -> str:
        return self.config.joint_names[self.config.ids.index(servo_id)]

    def _io(self, fn, *args):
        """Run one SDK call; a port that vanished (pyserial's SerialException is an OSError)
        becomes this driver's error naming the port."""
        try:
            return fn(*args)
        except (OSError, _TermiosError) as e:
            self._vanished = True
            raise self.error(
                f"{self.config.port} vanished ({e}): the servos hold their last goal positions; "
                "reconnect the adapter and restart"
            ) from e

    def _check(self, result: int, error: int, what: str) -> None:
        if result != self._comm_success:
            raise self.error(f"{what}: {self._packet.getTxRxResult(result)} on {self.config.port}")
        if error:
            raise self.error(f"{what}: servo error {self._status_error(error)}")

    def _write(self, servo_id: int, item: tuple[int, int], value: int) -> None:
        addr, size = item
        fn = {1: self._packet.write1ByteTxRx, 2: self._packet.write2ByteTxRx, 4: self._packet.write4ByteTxRx}[size]
        result, error = self._io(fn, self._port, servo_id, addr, value)
        self._check(result, error, f"servo {servo_id} ({self._joint(servo_id)}): write address {addr}")

    def _read(self, servo_id: int, item: tuple[int, int]) -> int:
        addr, size = item
        fn = {1: self._packet.read1ByteTxRx, 2: self._packet.read2ByteTxRx, 4: self._packet.read4ByteTxRx}[size]
        value, result, error = self._io(fn, self._port, servo_id, addr)
        self._check(result, error, f"servo {servo_id} ({self._joint(servo_id)}): read address {addr}")
        return value

    def _torque(self, on: bool) -> None:
        for servo_id in self.config.ids:
            self._write(servo_id, self.TORQUE_ENABLE, int(on))

    def _drain(self) -> None:
        """Drop what is left in the receive buffer (the rest of a failed sync read's replies)."""
        time.sleep(0.001)
        self._io(self._port.ser.reset_input_buffer)

    def _try_sync_read(self) -> tuple[np.ndarray | None, str]:
        """One Sync Read: (ticks, "") or (None, what went wrong, naming the servo)."""
        result = self._io(self._sync_read_tx)
        if result != self._comm_success:
            return None, f"sync read of Present Position: {self._packet.getTxRxResult(result)} on {self.config.port}"
        size = self.PRESENT_POSITION[1]
        ticks = []
        for servo_id in self.config.ids:
            data, result, error = self._io(self._packet.readRx, self._port, servo_id, size)
            who = f"servo {servo_id} ({self._joint(servo_id)})"
            if result == self._comm_timeout:
                return None, f"{who}: no status packet in the sync read of Present Position on {self.config.port}"
            if result == self._comm_corrupt:
                return None, (f"{who}: corrupt status packet (checksum mismatch or cut short) in the sync read "
                              f"of Present Position on {self.config.port}")
            if result != self._comm_success or len(data) < size:
                return None, f"{who}: sync read of Present Position: {self._packet.getTxRxResult(result)}"
            if error:
                # a servo's own fault is not retried: its status says what it did (e.g. released)
                self._drain()
                raise self.error(f"{who} reports {self._status_error(error)}, status error 0x{error:02x}, "
                                 f"on {self.config.port}; the other servos hold their goals")
            ticks.append(self._decode_position(data))
        return np.array(ticks, np.int64), ""

    def read_ticks(self) -> np.ndarray:
        """Present Position of every servo (ticks, int64), by one Sync Read; a missing or corrupt
        reply is retried (``bus_tries`` in all) before it raises.

        Raises:
            ServoBusError: naming the servo that did not answer or whose reply was corrupt, or
                the status error a servo reported.
        """
        for attempt in range(self.bus_tries):
            ticks, problem = self._try_sync_read()
            if ticks is not None:
                return ticks
            self._drain()
        raise self.error(f"{problem} ({self.bus_tries} tries)")

    def _read_positions(self) -> np.ndarray:
        return to_radians(self.read_ticks())

    def _send(self, goal: np.ndarray) -> None:
        if self.config.passive:
            raise self.error(f"{self.config.port}: a passive (leader) arm takes no commands")
        size = self.GOAL_POSITION[1]
        self._writer.clearParam()
        for servo_id, tick in zip(self.config.ids, to_ticks(goal)):
            self._writer.addParam(servo_id, list(int(tick).to_bytes(size, "little", signed=True)))
        self._check(self._io(self._writer.txPacket), 0, "sync write of goal positions")

    # ------------------------------------------------------------------------- connecting
    def calibration_problem(self) -> str | None:
        """Why this arm may not be driven yet (it needs a calibration it lacks, naming the file
        to create and the command that creates it), or None."""
        path = self.calibration_path
        make = (f"tether calibrate --robot {self.kind} --robot-config ARM.json --out "
                f"{path if path is not None else 'calib.json'}")
        if path is None and self.requires_calibration:
            return (f"the {self.kind} arm on {self.config.port} is not calibrated: run `{make}` and set "
                    "\"calibration\": \"calib.json\" in its robot config")
        if path is not None and self.calibration is None:
            return f"the {self.kind} arm on {self.config.port} is not calibrated: {path} does not exist; create it with `{make}`"
        return None

    def _ping(self, servo_id: int) -> None:
        """Ping one servo, ``bus_tries`` times before its silence is an error: a reply can miss
        the SDK's window (twice the USB adapter's 16 ms latency timer, + 2 ms) on a busy host, as
        the first packets after opening a port often do on hardware."""
        for _ in range(self.bus_tries):
            _, result, error = self._io(self._packet.ping, self._port, servo_id)
            if result != self._comm_timeout:
                break
            self._drain()
        what = f"servo {servo_id} does not answer a ping ({self._joint(servo_id)})"
        self._check(result, error, what if result != self._comm_timeout else f"{what} in {self.bus_tries} tries")

    def open_bus(self) -> None:
        """Open the port, ping every servo, turn its torque off and set position control. The
        arm is then limp and readable (``read_ticks``); ``connect`` does this first.

        Raises:
            ServoBusError: the port cannot be opened, or a servo does not answer (names it).
        """
        sdk = self._sdk()
        cfg = self.config
        self._comm_success, self._comm_timeout, self._comm_corrupt = sdk.COMM_SUCCESS, sdk.COMM_RX_TIMEOUT, sdk.COMM_RX_CORRUPT
        self._port = sdk.PortHandler(cfg.port)
        self._vanished = False
        self._packet = self._packet_handler(sdk)
        try:
            opened = self._port.openPort() and self._port.setBaudRate(cfg.baudrate)
        except Exception as e:  # pyserial raises SerialException for a missing device
            self._port = None
            raise self.error(f"cannot open {cfg.port}: {e}") from e
        if not opened:
            self._port = None
            raise self.error(f"cannot open {cfg.port} at {cfg.baudrate} baud")
        try:
            for servo_id in cfg.ids:
                self._ping(servo_id)
            for servo_id in cfg.ids:
                self._write(servo_id, self.TORQUE_ENABLE, 0)  # EEPROM and mode are writable torque-off
                self._prepare(servo_id)
            self._writer = self._sdk().GroupSyncWrite(self._port, self._packet, *self.GOAL_POSITION)
        except BaseException:
            self._close()
            raise

    def write_calibration(self, offsets: dict[int, int], ranges: dict[int, tuple[int, int]] | None = None) -> None:
        """Write homing offsets (ticks) and position limits (ticks, calibrated frame; None: the
        full range) to the servos, each only where it differs (EEPROM wears). Torque is off."""
        for servo_id in self.config.ids:
            low, high = (ranges or {}).get(servo_id, self.FULL_RANGE)
            wanted = [(self.HOMING_OFFSET, self._encode_offset(offsets[servo_id])),
                      (self.MIN_POSITION_LIMIT, low), (self.MAX_POSITION_LIMIT, high)]
            changes = [(item, value) for item, value in wanted if self._read(servo_id, item) != value]
            if changes:
                self._eeprom_write(servo_id, changes)

    def read_offsets(self) -> dict[int, int]:
        """Each servo's Homing Offset register (ticks, signed)."""
        return {i: self._decode_offset(self._read(i, self.HOMING_OFFSET)) for i in self.config.ids}

    def connect(self) -> None:
        problem = self.calibration_problem()
        if problem is not None:
            raise self.error(problem)
        self.open_bus()
        try:
            if self.calibration is not None:
                self.calibration.check(self)
                self.write_calibration(self.calibration.offsets(), self.calibration.ranges())
            self._goal = self._read_positions()
            if self.config.passive:
                return  # a leader: torque off, moved by hand, only read
            self._send(self._goal)  # hold where it is before the torque comes on
            self._torque(True)
        except BaseException:
            self._close()
            raise

    # ----------------------------------------------------------------------- Robot interface
    def reset(self, task: str | None, seed: int | None) -> Observation:
        check_reset_args(self.spec, task, seed)
        if self.config.home is not None and not self.config.passive:
            # Move home through the same per-tick limit the safety layer uses, never in one jump.
            home = np.asarray(self.config.home, np.float32)
            step = self.config.max_velocity_rad_s / self.config.rate_hz
            while np.abs(home - self._goal).max() > 1e-6:
                self._goal = self._goal + np.clip(home - self._goal, -step, step)
                self._send(self._goal)
                time.sleep(1.0 / self.config.rate_hz)
        self._steps = 0
        return self.observe()

    def act(self, action: np.ndarray) -> None:
        self._goal = np.asarray(action, np.float32)
        self._send(self._goal)
        self._steps += 1

    def hold_action(self) -> np.ndarray:
        return self._goal.copy()

    def hold(self) -> np.ndarray:
        self._send(self._goal)
        self._steps += 1
        return self._goal.copy()

    def estop(self) -> None:
        # Stop where the arm is now (torque stays on: a released arm would fall).
        self._goal = self._read_positions()
        self._send(self._goal)

    def observe(self) -> Observation:
        limit = self.config.max_episode_steps
        return Observation({"observation.state": self._read_positions()},
                           truncated=limit is not None and self._steps >= limit)

    def _close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.closePort()
            except (OSError, _TermiosError):  # a vanished port: nothing left to close
                pass

    def disconnect(self) -> None:
        if self._port is None:
            return
        try:
            if self.config.torque_off_on_disconnect and not self._vanished:
                self._torque(False)
        finally:
            self._close()
