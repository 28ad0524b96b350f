"""The DYNAMIXEL arm driver through ROBOTIS' dynamixel_sdk, against servos emulated at the serial
transport: a pseudo-terminal whose other end speaks DYNAMIXEL Protocol 2.0 (packets, byte
stuffing, CRC-16, ping / read / write / sync read / sync write) like a chain of X-series servos
(``tether.robot.drivers.emulators.dynamixel``)."""

import time

import numpy as np
import pytest

pytest.importorskip("dynamixel_sdk", reason="install tether[dynamixel]")

from tether.robot.client import RobotClient  # noqa: E402
from tether.robot.drivers.dynamixel import (  # noqa: E402
    DynamixelArm, DynamixelConfig, DynamixelError, to_radians, to_ticks,
)
from tether.robot.drivers.emulators.dynamixel import ServoChain, crc16  # noqa: E402

pytestmark = pytest.mark.realtime  # see tests/conftest.py: runs alone under pytest-xdist


@pytest.fixture
def chain():
    with ServoChain((1, 2, 3)) as servos:
        yield servos


def config(chain, **kw):
    return DynamixelConfig(port=chain.port, ids=(1, 2, 3), low=(-1.5,) * 3, high=(1.5,) * 3,
                           max_velocity_rad_s=2.0, rate_hz=50.0, **kw)


def test_crc_matches_the_sdk():
    import dynamixel_sdk as sdk

    data = bytes(range(40))
    assert crc16(b"123456789") == 0xFEE8  # CRC-16/BUYPASS check value
    assert crc16(data) == sdk.PacketHandler(2.0).updateCRC(0, list(data), len(data))


def test_unit_conversion_round_trips():
    radians = np.array([-1.0, 0.0, 0.5])
    assert to_ticks(radians).tolist() == [1396, 2048, 2374]
    np.testing.assert_allclose(to_radians(to_ticks(radians)), radians, atol=2 * np.pi / 4096)


def test_connect_sets_position_mode_and_holds_where_it_is(chain):
    arm = DynamixelArm(config(chain))
    arm.connect()
    try:
        for table in chain.tables.values():
            assert table[11] == 3 and table[64] == 1  # position control, torque on
        assert chain.ticks(116) == [2048] * 3  # goal = present: no jump at torque-on
        np.testing.assert_allclose(arm.observe().values["observation.state"], 0.0)
    finally:
        arm.disconnect()


def test_actions_become_goal_positions_and_the_arm_follows(chain):
    arm = DynamixelArm(config(chain))
    arm.connect()
    try:
        arm.act(np.array([0.1, -0.2, 0.3], np.float32))
        deadline = time.monotonic() + 1  # a sync write has no reply: the emulator may lag a bit
        while chain.ticks(116) != to_ticks([0.1, -0.2, 0.3]).tolist() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert chain.ticks(116) == to_ticks([0.1, -0.2, 0.3]).tolist()
        for _ in range(10):
            state = arm.observe().values["observation.state"]
        np.testing.assert_allclose(state, [0.1, -0.2, 0.3], atol=2e-3)
        np.testing.assert_allclose(arm.hold(), [0.1, -0.2, 0.3], atol=1e-6)
    finally:
        arm.disconnect()


def test_reset_moves_home_within_the_speed_limit(chain):
    arm = DynamixelArm(config(chain, home=(0.2, 0.0, -0.2)))
    arm.connect()
    try:
        goals = []
        original = arm._send
        arm._send = lambda goal: (goals.append(goal.copy()), original(goal))
        arm.reset(None, None)
        steps = np.abs(np.diff(np.stack([np.zeros(3)] + goals), axis=0))
        assert steps.max() <= 2.0 / 50.0 + 1e-6 and np.allclose(goals[-1], [0.2, 0.0, -0.2])
    finally:
        arm.disconnect()


def test_a_lost_ping_reply_is_retried_and_a_silent_servo_named_after_its_tries(chain):
    chain.drop(2, 2)
    arm = DynamixelArm(config(chain))
    arm.connect()
    arm.disconnect()
    chain.drop(2, 3)
    with pytest.raises(DynamixelError, match=r"servo 2 does not answer a ping \(joint_2\) in 3 tries"):
        DynamixelArm(config(chain)).connect()


def test_missing_servo_and_missing_port_are_named(chain):
    with pytest.raises(DynamixelError, match="servo 7 does not answer a ping"):
        DynamixelArm(DynamixelConfig(port=chain.port, ids=(1, 7))).connect()
    with pytest.raises(DynamixelError, match="cannot open /dev/does-not-exist"):
        DynamixelArm(DynamixelConfig(port="/dev/does-not-exist", ids=(1,))).connect()


def test_served_over_the_robot_link_with_the_safety_layer(chain, serve, commanded):
    arm = DynamixelArm(config(chain))
    with serve(arm) as server:
        with RobotClient(server.address) as client:
            state = client.reset(None, None)
            client.send_action(np.array([1.0, 0.0, 0.0]), state["seq"])
            applied = commanded(client)["action"]
            np.testing.assert_allclose(applied, [2.0 / 50.0, 0.0, 0.0], atol=1e-6)  # rate-limited
            client.send_action(np.array([3.0, 0.0, 0.0]), state["seq"])  # beyond the joint limit
            time.sleep(0.1)
    assert server.stats.rejected["invalid_action"] == 1
    assert chain.packets > 20


def test_tether_serve_runs_the_arm_from_a_json_config(chain, tmp_path, commanded):
    import json

    from tether.launch.processes import free_tcp_address, start, stop, wait_for_server

    arm = tmp_path / "arm.json"
    arm.write_text(json.dumps({"port": chain.port, "ids": [1, 2, 3], "low": [-1.5] * 3,
                               "high": [1.5] * 3, "max_velocity_rad_s": 2.0}))
    address = free_tcp_address()
    server = start(["serve", "--robot", "dynamixel", "--robot-config", str(arm), "--address", address,
                    "--rate-hz", "50"], tmp_path / "serve.log")
    try:
        wait_for_server(address, server)
        with RobotClient(address) as client:
            assert client.spec.robot_type == "dynamixel-arm" and client.spec.control_rate_hz == 50
            state = client.reset(None, None)
            client.send_action(np.array([0.02, 0.0, -0.02]), state["seq"])
            np.testing.assert_allclose(commanded(client)["action"], [0.02, 0.0, -0.02], atol=1e-6)
    finally:
        stop(server)


def test_a_passive_leader_arm_keeps_its_torque_off_and_refuses_commands(chain, tmp_path):
    from tether.robot.teleop.config import LeaderOptions
    from tether.robot.teleop.leader import make_leader_robot

    arm = DynamixelArm(config(chain, passive=True))
    arm.connect()
    try:
        assert all(t[64] == 0 for t in chain.tables.values())  # torque off: moved by hand
        assert arm.observe().values["observation.state"].shape == (3,)
        with pytest.raises(DynamixelError, match="passive"):
            arm.act(np.zeros(3, np.float32))
    finally:
        arm.disconnect()
    import json
    path = tmp_path / "leader.json"
    path.write_text(json.dumps({"port": chain.port, "ids": list(chain.tables)}))
    assert make_leader_robot(LeaderOptions(robot="dynamixel", robot_config=str(path))).config.passive
