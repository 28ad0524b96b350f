"""Leader-arm teleop with real driver classes: a hand-moved leader arm and a position-controlled
follower served by a real robot server; the factory builds a point-mass leader from JSON."""

import json
import os
import time

import numpy as np
import pytest

from tether.robot.client import RobotClient
from tether.robot.driver import Observation, Robot
from tether.robot.drivers.dynamixel import DynamixelConfig
from tether.robot.drivers.pointmass import PointMassRobot
from tether.robot.spec import Feature, RobotSpec
from tether.robot.teleop import LeaderOptions, MappingError, TeleopConfig, TeleopError, make_device
from tether.robot.teleop.config import KeyboardOptions
from tether.robot.teleop.leader import LeaderArm

JOINTS = ("shoulder", "elbow", "wrist", "gripper")


def follower_spec(names=JOINTS, rate_hz=100.0):
    n = len(names)
    return DynamixelConfig(
        port="/dev/null", ids=tuple(range(1, n + 1)), joint_names=names, low=(-1.5,) * n, high=(1.5,) * n,
        max_velocity_rad_s=20.0, rate_hz=rate_hz,
    ).spec()  # fmt: skip


class HandArm(Robot):
    """A leader arm with its torque off: the test's ``pose`` is where the operator's hand put it."""

    def __init__(self, names=("l_shoulder", "l_elbow", "l_wrist", "l_gripper")):
        n = len(names)
        self.spec = RobotSpec("hand-arm", 100.0, {"observation.state": Feature("float32", (n,), names, "rad")},
                              Feature("float32", (n,), names, "rad"))  # fmt: skip
        self.pose = np.zeros(n, np.float32)
        self.connected = False

    def connect(self):
        self.connected = True

    def reset(self, task, seed):
        return self.observe()

    def act(self, action):
        raise AssertionError("a leader arm is never commanded")

    def hold(self):
        return None

    def observe(self):
        assert self.connected, "observe() before connect()"
        return Observation({"observation.state": self.pose.copy()})

    def disconnect(self):
        self.connected = False


class ServoArm(Robot):
    """A follower whose joints reach each commanded position within one tick."""

    def __init__(self, spec):
        self.spec = spec
        self.q = np.zeros(spec.action.shape, np.float32)

    def connect(self):
        pass

    def reset(self, task, seed):
        return self.observe()

    def act(self, action):
        self.q = np.asarray(action, np.float32).copy()

    def hold_action(self):
        return self.q.copy()

    def hold(self):
        return self.q.copy()

    def observe(self):
        return Observation({"observation.state": self.q.copy()})

    def disconnect(self):
        pass


def test_leader_pose_becomes_the_follower_action_with_sign_offset_and_limits():
    hand = HandArm()
    options = LeaderOptions(joint_names=("l_shoulder", "l_elbow", "l_wrist", "l_gripper"),
                            sign=(1, -1, 1, 1), offset=(0.0, 0.0, 0.1, 0.0), buttons="none")  # fmt: skip
    with LeaderArm(hand, follower_spec(), options) as leader:
        assert hand.connected
        hand.pose[:] = [0.3, 0.4, -0.2, 2.0]
        command = leader.read(None)
        assert command.action.dtype == np.float32
        np.testing.assert_allclose(command.action, [0.3, -0.4, -0.1, 1.5], atol=1e-6)  # gripper clipped
        assert not command.intervention and command.events == ()
    assert not hand.connected


def test_leader_joints_must_match_the_follower_action():
    with pytest.raises(MappingError, match=r"joints \['shoulder', 'elbow', 'wrist', 'gripper'\] .* not in the leader"):
        LeaderArm(HandArm(), follower_spec())
    with pytest.raises(MappingError, match="3 joint_names for the follower's 4"):
        LeaderArm(HandArm(), follower_spec(), LeaderOptions(joint_names=("l_shoulder",) * 3))
    with pytest.raises(MappingError, match="sign has 2 entries for 4 joints"):
        LeaderArm(HandArm(JOINTS), follower_spec(), LeaderOptions(sign=(1, -1)))


def test_follower_tracks_the_leader_through_a_robot_server(serve):
    spec = follower_spec()
    hand = HandArm(JOINTS)  # same joint names as the follower: no renaming needed
    with serve(ServoArm(spec)) as server, RobotClient(server.address, spec=spec) as client:
        with LeaderArm(hand, client.spec, LeaderOptions(buttons="none")) as leader:
            state = client.reset()
            target = np.array([0.5, -0.3, 0.2, 0.1], np.float32)
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                hand.pose = np.clip(hand.pose + np.clip(target - hand.pose, -0.02, 0.02), -2, 2)  # the hand moves
                client.send_action(leader.read(state).action, state["seq"])
                state = client.latest_state()
                if np.allclose(state["observation"]["observation.state"], target, atol=1e-3):
                    break
    np.testing.assert_allclose(state["observation"]["observation.state"], target, atol=1e-3)


def test_make_device_leader_from_json_with_keyboard_buttons(tmp_path):
    config_file = tmp_path / "leader.json"
    config_file.write_text(json.dumps({"rate_hz": 50.0}))
    master, slave = os.openpty()
    try:
        config = TeleopConfig(
            leader=LeaderOptions(robot="pointmass", robot_config=str(config_file), joint_names=("x", "y")),
            keyboard=KeyboardOptions(fd=slave, first_hold_s=0.3),
        )
        device = make_device("leader", follower_spec(("j1", "j2")), config)
        assert isinstance(device.robot, PointMassRobot) and device.robot.dt == pytest.approx(0.02)
        with device:
            device.robot.state[:2] = [0.25, -0.5]
            os.write(master, b"t\r")
            deadline = time.monotonic() + 2.0
            while not (command := device.read(None)).events and time.monotonic() < deadline:
                time.sleep(0.005)
        np.testing.assert_allclose(command.action, [0.25, -0.5])
        assert command.events == ("end_episode",) and command.intervention
    finally:
        os.close(master)
        os.close(slave)


def test_leader_config_errors_name_the_problem(tmp_path):
    with pytest.raises(TeleopError, match="dynamixel leader needs robot_config"):
        make_device("leader", follower_spec(), TeleopConfig(leader=LeaderOptions(buttons="none")))
    bad = tmp_path / "arm.json"
    bad.write_text(json.dumps({"port": "/dev/null", "ids": [1, 2], "low": [0.0]}))
    with pytest.raises(TeleopError, match="bad dynamixel config"):
        make_device("leader", follower_spec(), TeleopConfig(leader=LeaderOptions(robot_config=str(bad))))
    with pytest.raises(TeleopError, match="cannot read the robot config"):
        make_device("leader", follower_spec(), TeleopConfig(leader=LeaderOptions(robot_config=str(tmp_path / "none.json"))))
