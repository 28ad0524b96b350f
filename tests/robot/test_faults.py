"""Fault tests with real processes on loopback: a client killed mid-episode, a flood of malformed
messages, and a server restart under a running client."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tether.launch.processes import free_tcp_address, start, stop, wait_for_server
from tether.robot.client import RobotClient
from tether.robot.drivers.pointmass import PointMassRobot

pytestmark = pytest.mark.realtime  # see tests/conftest.py: runs alone under pytest-xdist


def python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_client_leaves_the_robot_holding(serve):
    rate, watchdog = 100.0, 0.1
    with serve(PointMassRobot(rate_hz=rate, max_episode_steps=100_000), watchdog_s=watchdog) as server:
        controller = python(f"""
            import numpy as np
            from tether.robot.client import RobotClient
            c = RobotClient("{server.address}"); c.connect()
            s = c.reset("reach-origin", 0)
            print("running", flush=True)
            while True:
                c.send_action(np.array([0.3, 0.3]), s["seq"]); s = c.latest_state()
        """)
        assert controller.stdout.readline().strip() == "running"
        with RobotClient(server.address, role="observer") as observer:
            time.sleep(0.3)
            os.kill(controller.pid, signal.SIGKILL)
            controller.wait()
            states = [observer.next_state() for _ in range(int(rate * 0.5))]
    commanded = [s for s in states if s["timing"]["command_age_s"] is not None]
    assert commanded, "the controller was commanding before the kill"
    last = commanded[-1]
    after = [s for s in states if s["seq"] > last["seq"]]
    # From the first tick without a command the robot holds: zero velocity command.
    assert all(np.allclose(s["action"], 0.0) for s in after)
    trip = next(s for s in after if "watchdog" in s["events"])
    # The watchdog trips within watchdog time + one control period of the last command.
    assert (trip["seq"] - last["seq"]) / rate <= watchdog + 1 / rate + 1e-9
    assert server.stats.watchdog_trips == 1


def test_flood_of_malformed_messages_keeps_the_rate_and_counts_every_reject(serve):
    rate, n = 200.0, 10_000
    with serve(PointMassRobot(rate_hz=rate, max_episode_steps=1_000_000)) as server:
        with RobotClient(server.address) as victim:
            victim.reset("reach-origin", 0)
        fuzzer = python(f"""
            import random, msgpack, numpy as np, zmq
            from tether.robot import protocol
            from tether.robot.client import RobotClient
            c = RobotClient("{server.address}", name="fuzzer"); c.connect()
            s = c.latest_state()
            rnd = random.Random(0)
            def cmd(action, ref=None):
                return protocol.encode("command", 1, action=action, ref_seq=s["seq"] if ref is None else ref)
            makers = [
                lambda: bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 64))),
                lambda: msgpack.packb([1, 2, 3]),
                lambda: msgpack.packb({{"v": 7, "type": "command", "seq": 1, "t": 0.0}}),
                lambda: msgpack.packb({{"v": 1, "type": "fly", "seq": 1, "t": 0.0}}),
                lambda: msgpack.packb({{"v": 1, "type": "command", "seq": 1, "t": 0.0}}),
                lambda: cmd(np.array([np.nan, 0.0], np.float32)),
                lambda: cmd(np.array([9.0, 0.0], np.float32)),
                lambda: cmd(np.zeros(7, np.float32)),
                lambda: cmd(np.zeros(2, np.float32), ref=0),  # stale: the server has ticked on
            ]
            for i in range({n}):
                c._dealer.send(makers[i % len(makers)]())
            print("sent", flush=True)
        """)
        t0, ticks0 = time.perf_counter(), server.stats.ticks
        assert fuzzer.stdout.read().strip().endswith("sent")
        fuzzer.wait()
        time.sleep(0.3)  # let the server drain its queue
        elapsed, ticks = time.perf_counter() - t0, server.stats.ticks - ticks0
    assert ticks >= 0.95 * rate * elapsed, (ticks, elapsed)
    assert sum(server.stats.rejected.values()) == n, server.stats.rejected
    per_kind = n // 9
    assert server.stats.rejected["malformed"] >= 5 * per_kind
    assert server.stats.rejected["invalid_action"] >= 3 * per_kind
    assert server.stats.rejected["stale"] >= per_kind
    assert server.stats.commands_applied == 0


def test_client_survives_a_server_restart(tmp_path, commanded):
    address = free_tcp_address()
    args = ["serve", "--robot", "pointmass", "--address", address, "--rate-hz", "100"]
    first = start(args, tmp_path / "first.log")
    wait_for_server(address, first)
    client = RobotClient(address, timeout_s=10)
    client.connect()
    session = client.session
    client.reset("reach-origin", 0)
    stop(first)
    second = start(args, tmp_path / "second.log")
    try:
        deadline = time.monotonic() + 30
        while client.reconnects == 0 and time.monotonic() < deadline:  # the same client object
            client.next_state(timeout_s=30)
        assert client.session != session and client.reconnects == 1
        state = client.reset("reach-origin", 1)
        client.send_action(np.array([0.5, 0.0]), state["seq"])
        assert commanded(client)["action"].tolist() == [0.5, 0.0]
    finally:
        client.close()
        stop(second)
