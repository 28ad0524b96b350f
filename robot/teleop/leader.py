"""Leader-arm teleoperation: a second arm the operator moves by hand, whose measured joint positions
become the follower's joint-position action (as in ALOHA and the Koch / SO-100 leader arms).

A leader arm is just a ``tether.robot.driver.Robot``: it is connected and read with ``observe()``;
it is never sent a command. The follower's action must be joint positions: each action element
takes one leader ``observation.state`` element (by name; ``LeaderOptions.joint_names`` renames),
times ``sign``, plus ``offset``, clipped to the follower's action limits. A leader has no buttons:
the intervention and episode keys come from a companion device (the terminal keyboard by
default; see ``keyboard`` for its keys), whose own axes are ignored.

A DYNAMIXEL or Feetech (SO-100 / SO-101 leader) arm is built with its config's ``passive`` set:
its torque stays off so the operator can move it, and the driver refuses commands to it. A Feetech
leader is calibrated like a follower (``tether calibrate --robot feetech``), so that both arms
read the same angle in the same pose.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tether.robot.driver import Robot
from tether.robot.spec import RobotSpec
from tether.robot.teleop.base import MappingError, TeleopCommand, TeleopDevice, TeleopError
from tether.robot.teleop.config import LeaderOptions


def make_leader_robot(options: LeaderOptions) -> Robot:
    """Build the leader's driver from ``options.robot`` and its JSON ``robot_config``.

    Raises:
        TeleopError: dynamixel / feetech without a config file, or an unreadable / invalid config.
    """
    settings = {}
    if options.robot_config is not None:
        try:
            settings = json.loads(Path(options.robot_config).read_text())
        except (OSError, ValueError) as e:
            raise TeleopError(f"leader: cannot read the robot config {options.robot_config}: {e}") from e
    if options.robot in ("dynamixel", "feetech"):
        if options.robot == "dynamixel":
            from tether.robot.drivers.dynamixel import DynamixelArm as Arm, DynamixelConfig as Config
        else:
            from tether.robot.drivers.feetech import FeetechArm as Arm, FeetechConfig as Config

        if options.robot_config is None:
            raise TeleopError(f"leader: a {options.robot} leader needs robot_config (a JSON file: port, ids, limits)")
        try:
            return Arm(Config(**{**settings, "passive": True}))
        except (TypeError, ValueError) as e:
            raise TeleopError(f"leader: bad {options.robot} config {options.robot_config}: {e}") from e
    if options.robot == "pointmass":
        from tether.robot.drivers.pointmass import PointMassRobot

        return PointMassRobot(**settings)
    raise TeleopError(f"leader: unknown robot {options.robot!r} (dynamixel, feetech or pointmass)")


class LeaderArm:
    """A leader arm as a teleop device.

    Args:
        robot: the leader's driver (connected by ``start``, disconnected by ``stop``).
        spec: the follower's spec; its action must be named joint positions.
        options: leader joint names, per-joint sign and offset.
        buttons: companion device for intervention and events (its action is ignored), or None.

    Raises:
        MappingError: (at construction) the leader's ``observation.state`` lacks a joint the
            follower's action needs, or sign / offset have the wrong length.
        TeleopError: from ``start`` when the leader (or the companion device) cannot be opened;
            from ``read`` when reading it fails.
    """

    name = "leader"

    def __init__(
        self,
        robot: Robot,
        spec: RobotSpec,
        options: LeaderOptions | None = None,
        buttons: TeleopDevice | None = None,
    ):
        options = options or LeaderOptions()
        self.robot, self.spec, self.options, self.buttons = robot, spec, options, buttons
        action = spec.action
        if action.names is None or len(action.shape) != 1:
            raise MappingError(f"leader: the follower's action of {spec.robot_type!r} must be a named vector")
        n = action.shape[0]
        leader_state = robot.spec.observation.get("observation.state")
        if leader_state is None or leader_state.names is None:
            raise MappingError(f"leader: {robot.spec.robot_type!r} has no named observation.state")
        wanted = tuple(options.joint_names) or action.names
        if len(wanted) != n:
            raise MappingError(f"leader: {len(wanted)} joint_names for the follower's {n} action elements")
        missing = [j for j in wanted if j not in leader_state.names]
        if missing:
            raise MappingError(
                f"leader: joints {missing} for the follower's action {list(action.names)} are not in "
                f"the leader's observation.state {list(leader_state.names)} (set joint_names)"
            )
        self._index = np.array([leader_state.names.index(j) for j in wanted])
        self.sign = self._per_joint(options.sign, 1.0, "sign", n)
        self.offset = self._per_joint(options.offset, 0.0, "offset", n)
        self.low = np.full(n, -np.inf) if action.low is None else np.asarray(action.low)
        self.high = np.full(n, np.inf) if action.high is None else np.asarray(action.high)
        self._connected = False

    @staticmethod
    def _per_joint(values: tuple[float, ...], default: float, what: str, n: int) -> np.ndarray:
        if not values:
            return np.full(n, default)
        if len(values) != n:
            raise MappingError(f"leader: {what} has {len(values)} entries for {n} joints")
        return np.asarray(values, np.float64)

    def __enter__(self) -> LeaderArm:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Connect the leader, then start the companion device."""
        try:
            self.robot.connect()
        except Exception as e:  # drivers raise their own errors (DynamixelError, OSError)
            raise TeleopError(f"leader: cannot connect the {self.robot.spec.robot_type!r} leader: {e}") from e
        self._connected = True
        if self.buttons is not None:
            try:
                self.buttons.start()
            except BaseException:
                self.stop()
                raise

    def stop(self) -> None:
        """Stop the companion device and disconnect the leader (safe to call twice)."""
        if self.buttons is not None:
            self.buttons.stop()
        if self._connected:
            self._connected = False
            self.robot.disconnect()

    def action_from(self, leader_state: np.ndarray) -> np.ndarray:
        """The follower's action (float32, its shape, within its limits) for a leader
        ``observation.state`` vector."""
        q = np.asarray(leader_state, np.float64)[self._index]
        return np.clip(self.sign * q + self.offset, self.low, self.high).astype(np.float32)

    def read(self, state: dict | None) -> TeleopCommand:
        """Read the leader; intervention and events come from the companion device."""
        try:
            leader_state = self.robot.observe().values["observation.state"]
        except Exception as e:
            raise TeleopError(f"leader: reading the leader arm failed: {e}") from e
        action = self.action_from(leader_state)
        if self.buttons is None:
            return TeleopCommand(action)
        companion = self.buttons.read(state)
        return TeleopCommand(action, companion.intervention, companion.events)
