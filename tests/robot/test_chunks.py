"""Action chunks: interpolation, expiry, blending, and execution on the server's time grid."""

import time

import numpy as np

from tether.robot.chunks import ActionChunk, ChunkScheduler
from tether.robot.client import RobotClient
from tether.robot.drivers.pointmass import PointMassRobot


def ramp(k=5, t0=10.0, dt=0.1):
    return ActionChunk(np.arange(k, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32), t0, dt)


def test_interpolation_and_zero_order_hold():
    c = ramp()
    assert c.at(9.99) is None and c.at(10.41) is None
    np.testing.assert_allclose(c.at(10.0), [0, 0])
    np.testing.assert_allclose(c.at(10.25), [2.5, 2.5], atol=1e-5)
    np.testing.assert_allclose(c.at(10.4), [4, 4])
    np.testing.assert_allclose(c.at(10.25, interpolate=False), [2, 2])


def test_expired_chunks_are_dropped():
    s = ChunkScheduler()
    s.add(ramp(t0=0.0))
    assert s.action_at(0.5) is None and s.chunks == []


def test_latest_and_ensemble_blending():
    old = ActionChunk(np.zeros((3, 1), np.float32), 0.0, 1.0)
    new = ActionChunk(np.ones((3, 1), np.float32), 1.0, 1.0)
    latest = ChunkScheduler("latest")
    ensemble = ChunkScheduler("ensemble", ensemble_m=np.log(3.0))
    for s in (latest, ensemble):
        s.add(old)
        s.add(new)
    np.testing.assert_allclose(latest.action_at(1.5), [1.0])
    # weights 1 (oldest) and exp(-m) = 1/3 (newer): (0 * 1 + 1 * 1/3) / (4/3) = 0.25
    np.testing.assert_allclose(ensemble.action_at(1.5), [0.25], atol=1e-6)
    np.testing.assert_allclose(ensemble.action_at(0.5), [0.0])  # only the old chunk covers it


def test_server_executes_a_chunk_on_its_grid(serve):
    rate = 100.0
    with serve(PointMassRobot(rate_hz=rate, max_episode_steps=10_000)) as server:
        with RobotClient(server.address) as client:
            state = client.reset("reach-origin", 0)
            # 20 Hz policy: 6 actions, 50 ms apart, ramping 0 -> 1 on x, starting at the next tick.
            actions = np.stack([np.linspace(0, 1, 6), np.zeros(6)], axis=1)
            client.send_chunk(actions, 0.05, state)
            applied = [client.next_state() for _ in range(int(0.3 * rate))]
    commanded = [s for s in applied if s["timing"]["command_latency_s"] is not None]
    x = np.array([s["action"][0] for s in commanded])
    # Each tick applies the plan's value at the tick's own time (server clock, the state's t,
    # stamped just after the tick): linear from 0 at t0 to 1 at t0 + 250 ms.
    t0 = state["t"] + 1 / rate
    expected = np.clip((np.array([s["t"] for s in commanded]) - t0) / 0.25, 0, 1)
    assert 20 <= len(x) <= 27  # 100 Hz ticks through a 250 ms plan
    np.testing.assert_allclose(x, expected, atol=0.02)
    assert np.all(np.diff(x) > 0) and x[-1] <= 1.0
    after = [s for s in applied if s["seq"] > commanded[-1]["seq"]]
    assert after and all(np.allclose(s["action"], 0) for s in after)  # plan over: hold


def test_bad_and_expired_chunks_are_rejected(serve):
    with serve(PointMassRobot(rate_hz=100.0)) as server:
        with RobotClient(server.address) as client:
            state = client.reset("reach-origin", 0)
            client.send_chunk(np.zeros((3, 5)), 0.05, state)  # wrong action size
            client.send_chunk(np.full((3, 2), np.nan), 0.05, state)
            client.send_chunk(np.zeros((3, 2)), 0.05, state, t0=state["t"] - 10)  # long past
            client.send_chunk(np.zeros((3, 2)), -1.0, state)
            time.sleep(0.1)
    assert server.stats.rejected == {"invalid_chunk": 2, "invalid_action": 1, "expired": 1}


def test_single_command_replaces_a_running_chunk(serve, commanded):
    with serve(PointMassRobot(rate_hz=100.0, max_episode_steps=10_000)) as server:
        with RobotClient(server.address) as client:
            state = client.reset("reach-origin", 0)
            client.send_chunk(np.full((40, 2), 0.5), 0.05, state)
            for _ in range(5):
                state = client.next_state()
            client.send_action(np.array([-0.2, 0.0]), state["seq"])
            while not np.allclose(commanded(client)["action"], [-0.2, 0.0]):
                pass
            after = [client.next_state()["action"] for _ in range(5)]
    assert all(np.allclose(a, 0.0) for a in after)  # the chunk was cancelled: hold after it
