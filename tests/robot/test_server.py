"""The robot server and client over real ZeroMQ sockets on loopback."""

import json
import time

import msgpack
import numpy as np
import pytest

from tether.robot import protocol
from tether.robot.client import RobotClient, RobotLinkError
from tether.robot.drivers.pointmass import PointMassRobot, pointmass_spec
from tether.robot.spec import RobotSpec, SpecMismatchError

pytestmark = pytest.mark.realtime  # see tests/conftest.py: runs alone under pytest-xdist


def drive_to_origin(client: RobotClient, seed: int = 0, max_steps: int = 400,
                    periods: list[float] | None = None) -> dict:
    """Run a P controller to the origin; appends each state's tick period (s) to ``periods``."""
    state = client.reset("reach-origin", seed)
    while not state["done"] and state["step"] < max_steps:
        pos = state["observation"]["observation.state"][:2]
        client.send_action(np.clip(-4 * pos, -1, 1), state["seq"])
        state = client.latest_state()
        if periods is not None:
            periods.append(state["timing"]["period_s"])
    return state


def test_controller_reaches_the_goal_and_state_carries_timing(pointmass_server):
    periods = []
    with RobotClient(pointmass_server.address, spec=pointmass_spec(200.0)) as client:
        state = drive_to_origin(client, periods=periods)
    assert state["success"] and state["done"]
    # the median, not one tick's: a loaded 2-core machine delays a single tick by several ms
    assert len(periods) > 10 and abs(np.median(periods) - 0.005) < 0.001
    assert state["timing"]["command_age_s"] is not None
    assert pointmass_server.stats.commands_applied > 10
    assert pointmass_server.stats.rejected == {}


def test_spec_mismatch_is_refused_with_the_differences(pointmass_server):
    wrong = pointmass_spec(50.0)
    client = RobotClient(pointmass_server.address, spec=wrong, timeout_s=3)
    with pytest.raises(RobotLinkError, match="control_rate_hz: policy 50, robot 200"):
        client.connect()
    client.close()
    assert pointmass_server.stats.rejected["handshake"] == 1


def test_client_checks_the_server_spec_too(pointmass_server):
    # A client whose spec the server accepts (a subset) but which wants a task the robot lacks.
    spec = pointmass_spec(200.0)
    wanting = RobotSpec(spec.robot_type, 200.0, spec.observation, spec.action, tasks=("fly",))
    client = RobotClient(pointmass_server.address, spec=wanting, timeout_s=3)
    with pytest.raises((RobotLinkError, SpecMismatchError), match="fly"):
        client.connect()
    client.close()


def test_bad_commands_are_dropped_and_counted_while_the_loop_runs(pointmass_server):
    with RobotClient(pointmass_server.address) as client:
        state = client.reset("reach-origin", 1)
        ticks_before = pointmass_server.stats.ticks
        client.send_action(np.array([np.nan, 0.0]), state["seq"])
        client.send_action(np.array([5.0, 0.0]), state["seq"])
        client.send_action(np.zeros(3), state["seq"])
        later = client.next_state()
        while later["seq"] < 5:  # a fresh server: wait until a 4-tick-old state exists
            later = client.next_state()
        client.send_action(np.zeros(2), later["seq"] - 4)  # stale: more than 3 ticks old
        client._dealer.send(b"\x00not msgpack")
        client._dealer.send(msgpack.packb({"v": 1, "type": "command", "seq": 1, "t": 0.0}))
        time.sleep(0.2)
        rejected = dict(pointmass_server.stats.rejected)
        # The robot held on those ticks instead of applying anything.
        assert pointmass_server.stats.ticks - ticks_before >= 20
    assert rejected == {"invalid_action": 3, "stale": 1, "malformed": 2}


def test_observer_cannot_command(pointmass_server):
    with RobotClient(pointmass_server.address, role="controller") as controller, RobotClient(
        pointmass_server.address, role="observer"
    ) as observer:
        state = controller.reset("reach-origin", 2)
        observer.send_action(np.array([1.0, 1.0]), state["seq"])
        time.sleep(0.05)
        assert pointmass_server.stats.rejected["not_a_controller"] == 1
        latest = observer.latest_state()
        assert np.allclose(latest["observation"]["observation.state"][2:], 0, atol=1e-6)


def test_reset_to_an_unknown_task_is_refused(pointmass_server):
    with RobotClient(pointmass_server.address, timeout_s=3) as client:
        with pytest.raises(RobotLinkError, match="unknown task 'fly'"):
            client.reset("fly", 0)


def test_no_server_gives_a_clear_error():
    from tether.launch.processes import free_tcp_address

    client = RobotClient(free_tcp_address(), timeout_s=0.5)
    with pytest.raises(RobotLinkError, match="is `tether serve` running there"):
        client.connect()
    client.close()


def test_holds_when_no_command_arrives_and_watchdog_trips(serve):
    robot = PointMassRobot(rate_hz=200.0)
    with serve(robot, watchdog_s=0.05) as server:
        with RobotClient(server.address) as client:
            state = client.reset("reach-origin", 3)
            client.send_action(np.array([1.0, 0.0]), state["seq"])
            time.sleep(0.2)
            state = client.latest_state()
    assert server.stats.commands_applied == 1
    assert server.stats.holds > 10
    assert server.stats.watchdog_trips == 1
    np.testing.assert_allclose(state["action"], [0.0, 0.0])  # the hold action is published


def test_oversized_messages_are_counted_and_huge_ones_cut_off(serve):
    robot = PointMassRobot(rate_hz=200.0)
    with serve(robot, max_message_bytes=1024) as server:
        with RobotClient(server.address) as client:
            state = client.reset("reach-origin", 0)
            big = protocol.encode("command", 1, action=np.full(512, 0.5, np.float32), ref_seq=state["seq"])
            client._dealer.send(big)  # 2 KiB: received, counted, dropped
            time.sleep(0.1)
            assert server.stats.rejected["too_large"] == 1
            huge = protocol.encode("command", 1, action=np.full(4096, 0.5, np.float32), ref_seq=state["seq"])
            client._dealer.send(huge)  # 16 KiB > 4x the limit: ZeroMQ drops the connection
            time.sleep(0.2)
            state = client.latest_state()
            ticks = server.stats.ticks
    assert server.stats.commands_applied == 0
    assert state["step"] >= 50 and ticks >= 50  # the loop kept its rate throughout


def test_lockstep_ticks_as_soon_as_the_controller_answers_and_holds_without_it(serve):
    # 2 Hz: an answer may be up to 500 ms late before the tick holds (at 10 Hz a loaded machine's
    # 100 ms hiccup made a hold); 100 ticks are 50 s of robot time, so 5 s still proves lockstep
    with serve(PointMassRobot(rate_hz=2.0, max_episode_steps=1000), lockstep=True) as server:
        with RobotClient(server.address) as client:
            state = client.reset()
            t0 = time.monotonic()
            for _ in range(100):
                client.send_action(np.array([0.5, 0.0], np.float32), state["seq"])
                state = client.next_state()
                assert state["timing"]["command_latency_s"] is not None  # never a hold
            assert time.monotonic() - t0 < 5.0 and state["step"] == 100
            t0 = time.monotonic()
            for _ in range(3):  # silent client: real-time ticks, holding
                state = client.next_state()
                assert state["timing"]["command_latency_s"] is None
            assert time.monotonic() - t0 > 1.0  # three 500 ms periods, less the first one's start


def test_a_1khz_server_answers_and_a_client_reads_every_tick(tmp_path):
    # A 1 kHz loop waits less than a millisecond between ticks: one that polled its socket only in
    # whole milliseconds never read it, and no client could connect (issue 21).
    from tether.launch import processes

    address = processes.free_tcp_address()
    server = processes.start(["serve", "--robot", "pointmass", "--address", address, "--rate-hz", "1000",
                              "--max-episode-steps", "600"], tmp_path / "serve.log")
    try:
        processes.wait_for_server(address, server, timeout_s=30)
        with RobotClient(address, spec=pointmass_spec(1000.0), timeout_s=5) as client:
            state = client.reset("reach-origin", 0)
            seqs, answered = [state["seq"]], 0
            while not state["done"]:
                pos = state["observation"]["observation.state"][:2]
                client.send_action(np.clip(-4 * pos, -1, 1), state["seq"])
                state = client.next_state()
                seqs.append(state["seq"])
                answered += state["timing"]["command_latency_s"] is not None
    finally:
        assert processes.stop(server) == 0
    assert state["done"] and state["step"] == len(seqs) - 1 and np.diff(seqs).max() == 1  # every tick read
    assert answered > 300  # most ticks ran a command that answered a state of this loop


def test_tether_serve_stops_on_signals_in_quick_succession(tmp_path):
    # Ctrl-C reaches a server and the collector that started it at once, and the collector then
    # asks the server to stop too: a handler that took a lock (threading.Event.set) could deadlock.
    import signal

    from tether.launch import processes

    for _ in range(3):
        address = processes.free_tcp_address()
        stats = tmp_path / "stats.json"
        server = processes.start(["serve", "--robot", "pointmass", "--address", address, "--stats-json",
                                  str(stats)], tmp_path / "serve.log", die_with_parent=False)
        processes.wait_for_server(address, server, timeout_s=30)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGINT):
            server.send_signal(sig)
        assert server.wait(20) == 0
        assert json.loads(stats.read_text())["ticks"] > 0
        stats.unlink()


def test_a_busy_waiting_client_reads_every_state_in_order_and_times_out_like_a_sleeping_one(pointmass_server):
    with RobotClient(pointmass_server.address, busy_wait=True) as client:
        seqs = [client.next_state()["seq"] for _ in range(20)]
        assert seqs == list(range(seqs[0], seqs[0] + 20))
        client.send_action(np.zeros(2, np.float32))
    silent = RobotClient("tcp://127.0.0.1:9", busy_wait=True)  # nothing listens there
    try:
        with pytest.raises(RobotLinkError, match=r"no state from tcp://127.0.0.1:9 within 0.2 s"):
            silent.next_state(timeout_s=0.2)
    finally:
        silent.close()
