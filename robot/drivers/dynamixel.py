"""Hardware driver for arms built from DYNAMIXEL X-series servos (Koch v1.1, ALOHA-style and other
low-cost arms), through ROBOTIS' ``dynamixel_sdk`` (Protocol 2.0).

Observation ``observation.state``: joint positions (rad). Action: goal joint positions (rad),
bounded by the configured joint limits; the safety layer bounds the joints' commanded speed to
``max_velocity_rad_s`` (``SafetySpec.max_velocity``: a change of at most that / the loop's rate
per tick). All joints are read with one Sync Read of Present Position and
commanded with one Sync Write of Goal Position per tick.

Set-up (Linux): install ``pip install 'tether[dynamixel]'``; plug in the U2D2 (or any USB-serial
adapter), find it under ``/dev/serial/by-id/``; make it yours (``sudo usermod -aG dialout $USER``)
and set its latency timer to 1 ms (``echo 1 | sudo tee
/sys/bus/usb-serial/devices/ttyUSB0/latency_timer``); give each servo a unique ID and the same baud
rate with DYNAMIXEL Wizard; write the IDs, limits and home pose into a ``DynamixelConfig``.
Control table addresses: ROBOTIS e-Manual, X-series (XL330, XL430, XM430, ...).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from tether.robot.driver import Observation, Robot, check_reset_args
from tether.robot.spec import Feature, RobotSpec, SafetySpec

# X-series control table (ROBOTIS e-Manual): address, size in bytes.
OPERATING_MODE = (11, 1)
TORQUE_ENABLE = (64, 1)
GOAL_POSITION = (116, 4)
PRESENT_POSITION = (132, 4)
POSITION_CONTROL_MODE = 3
TICKS_PER_REV = 4096
CENTER_TICK = 2048


class DynamixelError(ConnectionError):
    """The servo bus failed: port missing, a servo not answering, a communication error."""


@dataclass
class DynamixelConfig:
    """One arm: its serial port, servo IDs and joint limits.

    Attributes:
        port: serial device, e.g. ``/dev/ttyUSB0`` or ``/dev/serial/by-id/...``.
        ids: servo IDs, one per joint, in joint order.
        joint_names: names of the joints (default ``joint_<id>``).
        baudrate: bus baud rate (bit/s).
        low, high: joint limits (rad, 0 at the servo's centre tick 2048).
        home: joint positions (rad) the arm moves to at reset (default: stay where it is).
        max_velocity_rad_s: largest joint speed the safety layer lets a command ask for.
        rate_hz: control rate.
        torque_off_on_disconnect: release the servos at disconnect (an arm then falls).
        passive: a leader arm: torque stays off so the operator moves it by hand; it is only
            read, and a command to it raises ``DynamixelError``.
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
    robot_type: str = "dynamixel-arm"
    tasks: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        n = len(self.ids)
        self.joint_names = tuple(self.joint_names) or tuple(f"joint_{i}" for i in self.ids)
        self.low = tuple(self.low) or (-np.pi,) * n
        self.high = tuple(self.high) or (np.pi,) * n
        for name in ("joint_names", "low", "high") + (("home",) if self.home else ()):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} servos")

    def spec(self) -> RobotSpec:
        """The arm's robot spec: joint positions in rad, limits, rate, joint velocity limit."""
        n = len(self.ids)
        return RobotSpec(
            self.robot_type,
            self.rate_hz,
            {"observation.state": Feature("float32", (n,), self.joint_names, "rad")},
            Feature("float32", (n,), self.joint_names, "rad", low=self.low, high=self.high),
            tasks=self.tasks,
            safety=SafetySpec(max_velocity=(self.max_velocity_rad_s,) * n),
        )


def to_ticks(radians: np.ndarray) -> np.ndarray:
    """Joint angles (rad, 0 at the centre) -> X-series position ticks (4096 per turn, centre 2048)."""
    return np.round(np.asarray(radians) * TICKS_PER_REV / (2 * np.pi) + CENTER_TICK).astype(np.int64)


def to_radians(ticks: np.ndarray) -> np.ndarray:
    """X-series position ticks -> joint angles (rad, float32); inverse of ``to_ticks``."""
    return ((np.asarray(ticks, np.float64) - CENTER_TICK) * 2 * np.pi / TICKS_PER_REV).astype(np.float32)


class DynamixelArm(Robot):
    """Position-controlled DYNAMIXEL arm (see module docstring).

    Raises (from ``connect`` and each bus operation):
        DynamixelError: naming the port or the servo ID that failed.
    """

    def __init__(self, config: DynamixelConfig):
        self.config = config
        self.spec = config.spec()
        self._port = None
        self._goal: np.ndarray | None = None

    # ------------------------------------------------------------------------------ the bus
    def _check(self, result: int, error: int, what: str) -> None:
        import dynamixel_sdk as sdk

        if result != sdk.COMM_SUCCESS:
            raise DynamixelError(f"{what}: {self._packet.getTxRxResult(result)} on {self.config.port}")
        if error:
            raise DynamixelError(f"{what}: servo error {self._packet.getRxPacketError(error)}")

    def _write1(self, dxl_id: int, item: tuple[int, int], value: int) -> None:
        result, error = self._packet.write1ByteTxRx(self._port, dxl_id, item[0], value)
        self._check(result, error, f"servo {dxl_id}: write address {item[0]}")

    def connect(self) -> None:
        import dynamixel_sdk as sdk

        cfg = self.config
        self._port = sdk.PortHandler(cfg.port)
        self._packet = sdk.PacketHandler(2.0)
        try:
            opened = self._port.openPort() and self._port.setBaudRate(cfg.baudrate)
        except Exception as e:  # pyserial raises SerialException for a missing device
            raise DynamixelError(f"cannot open {cfg.port}: {e}") from e
        if not opened:
            raise DynamixelError(f"cannot open {cfg.port} at {cfg.baudrate} baud")
        for dxl_id in cfg.ids:
            _, result, error = self._packet.ping(self._port, dxl_id)
            self._check(result, error, f"servo {dxl_id} does not answer a ping")
            self._write1(dxl_id, TORQUE_ENABLE, 0)  # the operating mode is writable torque-off
            self._write1(dxl_id, OPERATING_MODE, POSITION_CONTROL_MODE)
        self._reader = sdk.GroupSyncRead(self._port, self._packet, *PRESENT_POSITION)
        for dxl_id in cfg.ids:
            self._reader.addParam(dxl_id)
        self._writer = sdk.GroupSyncWrite(self._port, self._packet, *GOAL_POSITION)
        self._goal = self._read_positions()
        if cfg.passive:
            return  # a leader: torque off, moved by hand, only read
        self._send(self._goal)  # hold where it is before the torque comes on
        for dxl_id in cfg.ids:
            self._write1(dxl_id, TORQUE_ENABLE, 1)

    def _read_positions(self) -> np.ndarray:
        result = self._reader.txRxPacket()
        self._check(result, 0, "sync read of present positions")
        ticks = []
        for dxl_id in self.config.ids:
            if not self._reader.isAvailable(dxl_id, *PRESENT_POSITION):
                raise DynamixelError(f"servo {dxl_id}: no present position in the sync read")
            value = self._reader.getData(dxl_id, *PRESENT_POSITION)
            ticks.append(value - (1 << 32) if value >= 1 << 31 else value)  # signed 32-bit
        return to_radians(np.array(ticks))

    def _send(self, goal: np.ndarray) -> None:
        if self.config.passive:
            raise DynamixelError(f"{self.config.port}: a passive (leader) arm takes no commands")
        self._writer.clearParam()
        for dxl_id, tick in zip(self.config.ids, to_ticks(goal)):
            self._writer.addParam(dxl_id, list(int(tick).to_bytes(4, "little", signed=True)))
        self._check(self._writer.txPacket(), 0, "sync write of goal positions")

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
        return self.observe()

    def act(self, action: np.ndarray) -> None:
        self._goal = np.asarray(action, np.float32)
        self._send(self._goal)

    def hold_action(self) -> np.ndarray:
        return self._goal.copy()

    def hold(self) -> np.ndarray:
        self._send(self._goal)
        return self._goal.copy()

    def estop(self) -> None:
        # Stop where the arm is now (torque stays on: a released arm would fall).
        self._goal = self._read_positions()
        self._send(self._goal)

    def observe(self) -> Observation:
        return Observation({"observation.state": self._read_positions()})

    def disconnect(self) -> None:
        if self._port is None:
            return
        try:
            if self.config.torque_off_on_disconnect:
                for dxl_id in self.config.ids:
                    self._write1(dxl_id, TORQUE_ENABLE, 0)
        finally:
            self._port.closePort()
            self._port = None
