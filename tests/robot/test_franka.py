"""The Franka driver through franky (libfranka) against franky-sim, a simulator of libfranka's
network protocol, in a process of its own (``tether.robot.drivers.emulators.franka``): reflexes
surfaced as tether errors (through the robot server: the episode ends, the fault is published, the
next reset recovers or says why it cannot), joints past their limits refused before anything
reaches franky, Cartesian velocity with its workspace box, a pulled cable; and the config's
refusals, which need no robot."""

import sys
import time

import numpy as np
import pytest

from tether.robot.drivers.franka import MODELS, FrankaArm, FrankaConfig, FrankaError, _franky

pytestmark = pytest.mark.realtime  # see tests/conftest.py: runs alone under pytest-xdist


def test_bad_configs_are_refused_in_one_line():
    cases = [
        (dict(action="torque"), "action must be 'joint' or 'cartesian_velocity'"),
        (dict(model="ur5"), "model must be one of"),
        (dict(rate_hz=2000), r"rate_hz must be in \(0, 1000\]"),
        (dict(high=(3.0,) + MODELS["fr3"]["high"][1:]), r"joint_1: limits .* must lie within the fr3's"),
        (dict(low=(0.0,) * 6), "low has 6 entries for 7 joints"),
        (dict(home=(0.0, 0.0, 0.0, 0.0, 0.0, 1.57, 0.0)), "home is outside the joint limits at joint_4"),
        (dict(max_velocity_rad_s=3.0), "max_velocity_rad_s must be 1 or 7 values"),
        (dict(workspace_low=None), "give both workspace_low and workspace_high"),
        (dict(relative_dynamics_factor=0), r"relative_dynamics_factor must be in \(0, 1\]"),
        (dict(link_timeout_s=0), "link_timeout_s must be > 0"),
    ]
    for overrides, message in cases:
        with pytest.raises(ValueError, match=message):
            FrankaConfig(host="172.16.0.2", **overrides)


def test_the_specs_of_both_action_modes():
    joint = FrankaConfig(host="172.16.0.2", rate_hz=200).spec()
    assert joint.robot_type == "franka-fr3" and joint.control_rate_hz == 200
    assert joint.action.names[0] == "joint_1" and joint.action.unit == "rad"
    assert joint.action.high == MODELS["fr3"]["high"] and joint.safety.max_velocity == (1.0,) * 7
    velocity = FrankaConfig(host="172.16.0.2", action="cartesian_velocity", max_linear_m_s=0.1).spec()
    assert velocity.action.names == ("vx", "vy", "vz", "wx", "wy", "wz") and velocity.action.high[:3] == (0.1,) * 3
    assert velocity.observation["observation.state"].names[-3:] == ("ee_x", "ee_y", "ee_z")
    assert velocity.safety.workspace_low == (0.2, -0.5, 0.05) and velocity.safety.ee_action_kind == "delta"
    assert velocity.safety.max_delta_per_tick[0] == pytest.approx(1.0 / 100)  # 1 m/s^2 at 100 Hz


def test_without_franky_connect_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "franky", None)  # what an environment without the extra has
    with pytest.raises(FrankaError, match=r"franky is not installed .*pip install 'tether\[franka\]'"):
        _franky()


# ------------------------------------------------------------------------ against franky-sim
@pytest.fixture(scope="module")
def peer():
    pytest.importorskip("franky", reason="install tether[franka]")
    pytest.importorskip("franky_sim", reason="install tether[franka-sim]")
    from tether.robot.drivers.emulators.franka import FrankaPeer

    with FrankaPeer() as p:
        yield p


def make(peer, **overrides) -> FrankaArm:
    settings = dict(host=peer.hostname, realtime=False, home=None, rate_hz=100.0, relative_dynamics_factor=0.5,
                    max_velocity_rad_s=1.0)
    return FrankaArm(FrankaConfig(**{**settings, **overrides}))


def fault_events(client, timeout_s=3.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = client.next_state()
        faults = [e for e in state["events"] if e.startswith("fault: ")]
        if faults:
            return faults
    return []


def test_a_reflex_ends_the_episode_with_its_reason_and_the_next_reset_recovers(peer, serve):
    from tether.robot.client import RobotClient

    arm = make(peer)
    with serve(arm) as server, RobotClient(server.address) as client:
        state = client.reset(None, None)
        client.send_action(arm.hold_action() + 0.01, state["seq"])
        time.sleep(0.1)
        peer.reflex(["cartesian_reflex", "joint_reflex"])
        faults = fault_events(client)
        assert faults and "reflex: cartesian_reflex, joint_reflex" in faults[0], faults
        assert client.latest_state()["done"] and server.stats.faults == 1
        assert peer.state()["robot_mode"] == 4  # Reflex: the robot stopped itself

        client.reset(None, None)  # automatic error recovery, then a new episode
        assert peer.state()["robot_mode"] in (1, 2) and not client.latest_state()["done"]

        peer.reflex(["joint_position_limits_violation"], recoverable=False)
        assert "joint_position_limits_violation" in fault_events(client)[0]
        with pytest.raises(Exception, match="automatic error recovery refused: .*manual error recovery required"):
            client.reset(None, None)
        peer.clear()  # a person cleared it
        client.reset(None, None)
    assert server.stats.rejected["reset_failed"] == 1


def test_a_joint_past_its_limit_is_refused_before_it_reaches_franky(peer, serve):
    from tether.robot.client import RobotClient

    arm = make(peer)
    high = np.asarray(arm.spec.action.high)
    with serve(arm) as server, RobotClient(server.address) as client:
        state = client.reset(None, None)
        peer.clear_record()
        past = arm.hold_action().copy()
        past[3] = high[3] + 0.05  # joint_4 past its upper limit (-0.1518 rad on an FR3)
        client.send_action(past, state["seq"])
        time.sleep(0.2)
    assert server.stats.rejected["invalid_action"] == 1
    record = peer.state()
    assert record["q_c_max"] is None or record["q_c_max"][3] <= high[3]  # nothing past the limit left tether
    arm.connect()
    try:
        with pytest.raises(FrankaError, match=r"outside the spec's limits .*nothing was sent"):
            arm.act(past)  # the driver refuses it too, called directly
        time.sleep(0.05)
    finally:
        arm.disconnect()
    assert peer.state()["q_c_max"][3] <= high[3]


def test_cartesian_velocity_moves_the_end_effector_and_stops_when_no_twist_comes(peer):
    arm = make(peer, action="cartesian_velocity", workspace_low=None, workspace_high=None)
    arm.connect()
    try:
        start = arm.reset(None, None).values["observation.ee_pose"][:3]
        for _ in range(40):  # 0.05 m/s along x for 0.4 s
            arm.act(np.array([0.05, 0, 0, 0, 0, 0], np.float32))
            arm.observe()
            time.sleep(0.01)
        moved = arm.observe().values["observation.ee_pose"][:3] - start
        assert 0.005 < moved[0] < 0.03 and np.abs(moved[1:]).max() < 0.003, moved
        for _ in range(30):  # no command: the last twist runs out after 3 ticks and the arm brakes
            np.testing.assert_array_equal(arm.hold(), arm.hold_action())
            time.sleep(0.01)
        assert not arm.hold_action().any()
        rest = arm.observe().values["observation.ee_pose"][:3]
        time.sleep(0.2)
        np.testing.assert_allclose(arm.observe().values["observation.ee_pose"][:3], rest, atol=5e-4)
    finally:
        arm.disconnect()


def test_the_workspace_box_zeroes_a_twist_that_would_leave_it(peer, serve):
    from tether.robot.client import RobotClient

    probe = make(peer, action="cartesian_velocity")
    probe.connect()
    x = float(probe.reset(None, None).values["observation.ee_pose"][0])
    probe.disconnect()
    arm = make(peer, action="cartesian_velocity", workspace_low=(x - 0.3, -0.5, 0.05),
               workspace_high=(x - 0.001, 0.5, 0.9))  # the end effector is already past the +x face
    with serve(arm) as server, RobotClient(server.address) as client:
        state = client.reset(None, None)
        for _ in range(20):
            client.send_action(np.array([0.01, 0, 0, 0, 0, 0], np.float32), state["seq"])
            state = client.next_state()
        assert abs(float(state["action"][0])) == 0.0  # zeroed on x by the safety layer
    assert server.stats.clipped["workspace_clipped"] >= 1


def test_a_pulled_cable_is_named_as_a_lost_link(peer):
    from tether.robot.drivers.emulators.franka import FrankaPeer

    with FrankaPeer() as own:  # silenced for good: not the module's peer
        arm = make(own)
        arm.connect()
        arm.reset(None, None)
        own.silence()
        t0 = time.monotonic()
        with pytest.raises(FrankaError, match=r"lost the link to the Franka at .*(no new robot state|robot's clock|UDP)"):
            while time.monotonic() - t0 < 3:
                arm.hold()
                arm.observe()
                time.sleep(0.01)
        assert time.monotonic() - t0 < 1.0  # link_timeout_s (0.2 s), not libfranka's 1 s
        arm.disconnect()  # returns: franky's destructor would wait for the silent peer with the GIL held
        with pytest.raises(FrankaError, match="lost the link"):
            arm.reset(None, None)


@pytest.mark.parametrize("hangs", ["connect", "recovery", "move home"])
def test_a_control_that_stops_answering_commands_is_a_lost_link_not_a_hang(peer, hangs):
    """libfranka waits for a command's answer with no timeout (inside C++, where pytest's and
    the server's signals cannot reach): the driver gives up after command_timeout_s."""
    from tether.robot.drivers.emulators.franka import FR3_HOME, FrankaPeer

    with FrankaPeer() as own:  # deaf for good: not the module's peer
        arm = make(own, command_timeout_s=1.0, home_timeout_s=1.0, home=FR3_HOME if hangs == "move home" else None)
        t0 = time.monotonic()
        if hangs == "connect":
            own.deaf()
            with pytest.raises(FrankaError, match=r"cannot connect .*connect: no answer from the Control within 1 s"):
                arm.connect()
        else:
            arm.connect()
            arm.reset(None, None)
            time.sleep(0.1)
            if hangs == "recovery":
                own.reflex(["joint_reflex"])
                with pytest.raises(Exception, match="reflex: joint_reflex"):
                    for _ in range(300):
                        arm.hold()
                        time.sleep(0.01)
            own.deaf()
            t0 = time.monotonic()
            with pytest.raises(FrankaError, match=f"lost the link .*{hangs}.* within 1 s"):
                arm.reset(None, None)
            with pytest.raises(FrankaError, match="lost the link"):
                arm.hold()
            arm.disconnect()
        assert time.monotonic() - t0 < 3.0
