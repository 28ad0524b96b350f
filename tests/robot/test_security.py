"""CurveZMQ on the robot link: allowed keys work, everyone else sees nothing."""

import numpy as np
import pytest

from tether.robot.client import RobotClient, RobotLinkError
from tether.robot.drivers.pointmass import PointMassRobot
from tether.robot.security import (
    ClientKeys, InsecureBindError, ServerKeys, generate_keypair, is_loopback,
)
from tether.robot.server import RobotServer


@pytest.fixture
def keys(tmp_path):
    generate_keypair(tmp_path / "server", "robot")
    generate_keypair(tmp_path / "allowed", "operator")
    generate_keypair(tmp_path / "stranger", "stranger")
    return tmp_path


def test_allowed_client_commands_and_others_are_shut_out(serve, keys, commanded):
    server_keys = ServerKeys(keys / "server/robot.key_secret", keys / "allowed")
    with serve(PointMassRobot(rate_hz=200.0), keys=server_keys) as server:
        operator = ClientKeys(keys / "allowed/operator.key_secret", keys / "server/robot.key")
        with RobotClient(server.address, keys=operator) as client:
            state = client.reset("reach-origin", 0)
            client.send_action(np.array([0.5, 0.5]), state["seq"])
            assert commanded(client)["action"].tolist() == [0.5, 0.5]

        stranger = ClientKeys(keys / "stranger/stranger.key_secret", keys / "server/robot.key")
        for client_keys in (stranger, None):
            client = RobotClient(server.address, keys=client_keys, timeout_s=1.0)
            with pytest.raises(RobotLinkError, match="allow this client's key"):
                client.connect()
            with pytest.raises(RobotLinkError, match="no state"):
                client.next_state(timeout_s=0.5)  # cannot read the robot's state either
            client.close()
    assert server.stats.episodes == 1 and server.stats.commands_applied == 1


def test_non_loopback_bind_needs_keys_or_insecure(keys):
    with pytest.raises(InsecureBindError, match="--insecure"):
        RobotServer(PointMassRobot(), "tcp://0.0.0.0:5555")
    RobotServer(PointMassRobot(), "tcp://0.0.0.0:5555", insecure=True)  # allowed, not started
    RobotServer(PointMassRobot(), "tcp://0.0.0.0:5555",
                keys=ServerKeys(keys / "server/robot.key_secret", keys / "allowed"))


def test_is_loopback():
    assert is_loopback("tcp://127.0.0.1:1") and is_loopback("tcp://localhost:1")
    assert is_loopback("tcp://[::1]:1") and is_loopback("ipc:///tmp/x")
    assert not is_loopback("tcp://0.0.0.0:1") and not is_loopback("tcp://192.168.1.5:1")
    assert not is_loopback("tcp://robot.local:1") and not is_loopback("tcp://eth0:1")


def test_keys_are_not_overwritten(keys):
    with pytest.raises(FileExistsError):
        generate_keypair(keys / "server", "robot")
    assert oct((keys / "server/robot.key_secret").stat().st_mode & 0o777) == "0o600"
