"""The Feetech (SO-100 / SO-101) arm driver through Feetech's own scservo_sdk, against STS3215
servos emulated byte by byte on a pseudo-terminal (``tether.robot.drivers.emulators.sts``):
calibration, the refusal of an uncalibrated arm, each bus fault with its error and the state it
leaves the arm in, ``tether calibrate`` with the test as the operator, ``tether serve`` from a
JSON config, and ``tether teleop --device leader`` mirroring a leader arm to a follower."""

import json
import signal
import subprocess
import time

import numpy as np
import pytest

pytest.importorskip("scservo_sdk", reason="install tether[feetech]")

from tether.robot.client import RobotClient  # noqa: E402
from tether.robot.drivers.calibration import Calibration, record_calibration  # noqa: E402
from tether.robot.drivers.emulators.sts import STSBus, checksum, zero_pose_calibration  # noqa: E402
from tether.robot.drivers.feetech import SO101_JOINTS, FeetechArm, FeetechConfig, FeetechError  # noqa: E402
from tether.robot.drivers.servo_arm import to_ticks  # noqa: E402

pytestmark = pytest.mark.realtime  # see tests/conftest.py: runs alone under pytest-xdist

IDS = (1, 2, 3, 4, 5, 6)
RAW_ZERO = (3000, 1000, 2048, 500, 3500, 2100)  # where each shaft sits in the zero pose: servos mounted anyhow


@pytest.fixture
def bus():
    with STSBus(IDS, start_ticks=RAW_ZERO) as servos:
        yield servos


@pytest.fixture
def calib(bus, tmp_path):
    path = tmp_path / "so101_calib.json"
    zero_pose_calibration(bus, SO101_JOINTS).save(path)
    return path


def config(bus, calib, **kw):
    return FeetechConfig(port=bus.port, calibration=str(calib), max_velocity_rad_s=2.0, rate_hz=50.0, **kw)


def wait_for(condition, timeout_s=2.0):
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.002)
    return condition()


def test_checksum_is_the_sts_manual_s():
    assert checksum(bytes([0x01, 0x02, 0x01])) == 0xFB  # PING to ID 1: FF FF 01 02 01 FB


def test_an_uncalibrated_arm_is_refused_naming_the_file_to_create(bus, tmp_path):
    with pytest.raises(FeetechError, match=r"not calibrated: run `tether calibrate --robot feetech"):
        FeetechArm(FeetechConfig(port=bus.port)).connect()
    missing = tmp_path / "arm_calib.json"
    with pytest.raises(FeetechError, match=f"{missing} does not exist; create it with `tether calibrate"):
        FeetechArm(FeetechConfig(port=bus.port, calibration=str(missing))).connect()
    assert bus.packets == 0 and not any(bus.torque(i) for i in IDS)  # nothing was sent
    bad = tmp_path / "bad.json"
    bad.write_text('{"robot": "feetech"}')
    with pytest.raises(FeetechError, match=f"{bad} is not a calibration file"):
        FeetechArm(FeetechConfig(port=bus.port, calibration=str(bad)))


def test_connect_writes_the_calibration_and_holds_where_the_arm_is(bus, calib):
    arm = FeetechArm(config(bus, calib))
    assert arm.spec.action.low == pytest.approx([-1000 * 2 * np.pi / 4096] * 6, abs=1e-6)  # the recorded range
    arm.connect()
    try:
        for i, raw in zip(IDS, RAW_ZERO):
            table = bus.servos[i].table
            assert bus.servos[i].offset == raw - 2048 and table[55] == 1  # offset written, EEPROM locked again
            assert (table[9] | table[10] << 8, table[11] | table[12] << 8) == (1048, 3048)  # position limits
            assert table[7] == 0 and table[33] == 0 and bus.torque(i)  # no return delay, position mode, torque on
            assert bus.goal(i) == 2048  # goal = present: no jump at torque-on
        np.testing.assert_allclose(arm.observe().values["observation.state"], 0.0)
        target = np.array([0.1, -0.2, 0.3, -0.4, 0.5, 0.2], np.float32)
        arm.act(target)
        assert wait_for(lambda: [bus.goal(i) for i in IDS] == to_ticks(target).tolist())
        assert wait_for(lambda: np.allclose(arm.observe().values["observation.state"], target, atol=2e-3))
        assert bus.bad_checksums == 0  # every instruction the SDK sent checked out
    finally:
        arm.disconnect()


def test_max_episode_steps_truncates_an_episode_and_a_reset_starts_the_count_again(bus, calib):
    arm = FeetechArm(config(bus, calib, max_episode_steps=3))
    arm.connect()
    try:
        for _ in range(2):
            assert not arm.reset(None, None).truncated
            arm.act(np.zeros(6, np.float32))
            arm.hold()
            assert not arm.observe().truncated
            arm.hold()
            assert arm.observe().truncated
    finally:
        arm.disconnect()
    with pytest.raises(ValueError, match="max_episode_steps must be >= 1 or null, got 0"):
        config(bus, calib, max_episode_steps=0)


def test_a_missing_servo_is_named_at_connect_and_while_running(bus, calib):
    bus.remove(4)
    with pytest.raises(FeetechError, match=r"servo 4 does not answer a ping \(wrist_flex\)"):
        FeetechArm(config(bus, calib)).connect()
    assert not any(bus.torque(i) for i in IDS)  # refused before any torque came on
    bus.restore(4)
    arm = FeetechArm(config(bus, calib))
    arm.connect()
    try:
        bus.remove(4)
        with pytest.raises(FeetechError, match=r"servo 4 \(wrist_flex\): no status packet in the sync read .* \(3 tries\)"):
            arm.observe()
        arm.hold()  # the rest of the arm is still commanded: it holds
        assert all(bus.torque(i) for i in IDS) and all(bus.goal(i) == 2048 for i in IDS)
    finally:
        arm.disconnect()


def test_a_server_whose_arm_cannot_connect_leaves_no_socket_open(bus, calib):
    import gc

    import zmq

    from tether.launch.processes import free_tcp_address
    from tether.robot.server import RobotServer

    bus.remove(2)
    with pytest.raises(FeetechError, match=r"servo 2 does not answer a ping \(shoulder_lift\)"):
        RobotServer(FeetechArm(config(bus, calib)), free_tcp_address()).run()
    gc.collect()  # an open socket would make this block in the context's term()
    assert all(c.closed for c in gc.get_objects() if type(c) is zmq.Context and c is not zmq.Context.instance())


def test_a_corrupt_reply_is_retried_and_a_corrupt_bus_is_an_error(bus, calib):
    arm = FeetechArm(config(bus, calib))
    arm.connect()
    try:
        bus.corrupt(2, count=1)  # one bit flip on the line: the sync read is tried again
        np.testing.assert_allclose(arm.observe().values["observation.state"], 0.0)
        bus.corrupt(2)  # every reply of servo 2 is corrupt
        with pytest.raises(FeetechError, match=r"servo 2 \(shoulder_lift\): corrupt status packet \(checksum mismatch"):
            arm.observe()
        assert all(bus.torque(i) for i in IDS)  # the arm holds its last goal
    finally:
        arm.disconnect()


def test_an_overload_names_the_servo_which_releases_while_the_others_hold(bus, calib, serve):
    arm = FeetechArm(config(bus, calib, torque_off_on_disconnect=False))
    with pytest.raises(FeetechError, match=r"servo 3 \(elbow_flex\) reports overload: its protection releases its "
                                           r"torque, status error 0x20"):
        with serve(arm) as server, RobotClient(server.address) as client:
            state = client.reset(None, None)
            client.send_action(np.full(6, 0.01, np.float32), state["seq"])
            time.sleep(0.1)
            bus.overload(3)
            time.sleep(1.0)  # the server stops at its next tick
    assert not bus.torque(3) and all(bus.torque(i) for i in IDS if i != 3)
    assert all(abs(bus.goal(i) - to_ticks(0.01)) <= 1 for i in IDS)  # the others hold the last goal


def test_a_vanished_port_is_named_and_the_driver_lets_go(bus, calib):
    arm = FeetechArm(config(bus, calib, torque_off_on_disconnect=True))
    arm.connect()
    bus.vanish()
    with pytest.raises(FeetechError, match=f"{bus.port} vanished .*the servos hold their last goal positions"):
        arm.act(np.zeros(6, np.float32))
    with pytest.raises(FeetechError, match="vanished"):
        arm.observe()
    arm.disconnect()  # nothing left to release: no second error
    assert all(bus.torque(i) for i in IDS)  # unreachable servos keep holding their goal


def test_record_calibration_refuses_a_joint_that_was_not_moved(bus, tmp_path):
    arm = FeetechArm(FeetechConfig(port=bus.port, ids=(1, 2), joint_names=("pan", "lift"), passive=True))
    sweep = iter([lambda: bus.move_to(1, RAW_ZERO[0] - 300), lambda: bus.move_to(1, RAW_ZERO[0] + 300)])

    def done():
        step = next(sweep, None)
        return step is None or step() is not None

    with pytest.raises(FeetechError, match=r"joints lift \(0 ticks\) were not moved through their range"):
        record_calibration(arm, lambda: None, done, sample_s=0.0)


def test_tether_calibrate_records_what_the_operator_does(bus, tmp_path, pipe_lines):
    from tether.launch.processes import tether_command

    arm_json = tmp_path / "so101.json"
    arm_json.write_text(json.dumps({"port": bus.port}))
    out = tmp_path / "so101_calib.json"
    proc = subprocess.Popen(tether_command("calibrate", "--robot", "feetech", "--robot-config", str(arm_json),
                                           "--out", str(out)),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = pipe_lines(proc.stdout)
    try:
        lines.wait_for("zero pose")
        proc.stdin.write("\n")
        proc.stdin.flush()
        lines.wait_for("move every joint")
        sweeps = [(-600, 700), (-900, 400), (-1200, 1300), (-500, 500), (-2000, 2000), (-10, 1400)]
        for i, raw, (low, high) in zip(IDS, RAW_ZERO, sweeps):  # one joint after the other, end to end
            for delta in np.linspace(0, low, 5).tolist() + np.linspace(low, high, 9).tolist() + [0]:
                bus.move_to(i, raw + delta)
                time.sleep(0.1 if delta in (low, high) else 0.005)  # a hand rests at each end stop
        time.sleep(0.05)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(30) == 0, "".join(lines.lines)
    finally:
        proc.kill()
    saved = json.loads(out.read_text())
    assert saved["robot"] == "feetech" and list(saved["joints"]) == list(SO101_JOINTS)
    for (name, joint), i, raw, (low, high) in zip(saved["joints"].items(), IDS, RAW_ZERO, sweeps):
        assert joint == {"id": i, "homing_offset": raw - 2048, "range_min": 2048 + low, "range_max": 2048 + high}, name
        assert bus.servos[i].offset == raw - 2048 and not bus.torque(i)
    # the driver now takes the arm: 0 rad in the zero pose, the recorded ranges as its limits
    arm = FeetechArm(FeetechConfig(port=bus.port, calibration=str(out)))
    assert arm.spec.action.high[0] == pytest.approx(700 * 2 * np.pi / 4096, abs=1e-6)
    arm.connect()
    try:
        np.testing.assert_allclose(arm.observe().values["observation.state"], 0.0)
    finally:
        arm.disconnect()
    assert isinstance(Calibration.load(out, arm), Calibration)


def test_tether_calibrate_refuses_an_existing_file_and_closed_input(bus, tmp_path, cli_error):
    arm_json = tmp_path / "so101.json"
    arm_json.write_text(json.dumps({"port": bus.port}))
    out = tmp_path / "calib.json"
    out.write_text("{}")
    assert "exists: pass --force" in cli_error("calibrate", "--robot", "feetech", "--robot-config", arm_json, "--out", out)
    from tether.launch.processes import tether_command

    proc = subprocess.run(
        tether_command(
            "calibrate", "--robot", "feetech", "--robot-config", str(arm_json), "--out", str(tmp_path / "c.json")),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "tether: error: the input closed before Enter was pressed: run tether calibrate in a terminal")


def test_tether_serve_refuses_an_uncalibrated_arm_in_one_line(bus, tmp_path, cli_error):
    arm_json = tmp_path / "so101.json"
    arm_json.write_text(json.dumps({"port": bus.port, "calibration": str(tmp_path / "so101_calib.json")}))
    err = cli_error("serve", "--robot", "feetech", "--robot-config", arm_json)
    assert f"{tmp_path / 'so101_calib.json'} does not exist; create it with `tether calibrate --robot feetech" in err
    assert "needs --robot-config" in cli_error("serve", "--robot", "feetech")


def test_teleop_leader_mirrors_a_leader_arm_to_the_follower_within_the_step_bound(tmp_path, serve):
    """tether teleop --device leader: a hand-moved Feetech leader (torque off) drives a Feetech
    follower served here; every goal the follower's servos receive differs from the previous one
    by at most max_velocity / rate (the safety layer's per-tick bound)."""
    from tether.launch.processes import start, stop

    rate, max_velocity = 50.0, 1.5
    bound_ticks = max_velocity / rate * 4096 / (2 * np.pi)
    with STSBus(IDS, start_ticks=RAW_ZERO) as follower_bus, STSBus(IDS, start_ticks=(2048,) * 6) as leader_bus:
        follower_calib, leader_calib = tmp_path / "follower_calib.json", tmp_path / "leader_calib.json"
        zero_pose_calibration(follower_bus, SO101_JOINTS).save(follower_calib)
        zero_pose_calibration(leader_bus, SO101_JOINTS).save(leader_calib)
        leader_json = tmp_path / "leader.json"
        leader_json.write_text(json.dumps({"port": leader_bus.port, "calibration": str(leader_calib),
                                           "robot_type": "so101-leader"}))
        follower = FeetechArm(FeetechConfig(port=follower_bus.port, calibration=str(follower_calib),
                                            max_velocity_rad_s=max_velocity, rate_hz=rate))
        with serve(follower) as server:
            teleop = start(["teleop", "--robot", server.address, "--device", "leader",
                            "--teleop.leader.robot", "feetech", "--teleop.leader.robot-config", str(leader_json),
                            "--teleop.leader.buttons", "none"], tmp_path / "teleop.log")
            try:
                target = np.array([0.6, -0.5, 0.8, -0.3, 1.0, 0.4])  # where the operator's hand takes the leader
                for i, tick in zip(IDS, to_ticks(target)):
                    leader_bus.move_to(i, tick)
                reached = wait_for(lambda: np.allclose(
                    [follower_bus.present(i) for i in IDS], to_ticks(target), atol=2), timeout_s=20)
                assert reached, (tmp_path / "teleop.log").read_text()[-2000:]
            finally:
                teleop.send_signal(signal.SIGINT)
                stop(teleop)
    assert server.stats.clipped["velocity_limited"] > 0  # the bound acted: the jump took many ticks
    for i in IDS:
        goals = np.array(follower_bus.servos[i].goals)
        assert len(goals) > 20 and np.abs(np.diff(goals)).max() <= np.ceil(bound_ticks) + 1
    assert leader_bus.packets > 20 and not any(leader_bus.torque(i) for i in IDS)  # the leader stayed limp
