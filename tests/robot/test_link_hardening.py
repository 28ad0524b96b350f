"""Issue 24's faults, each a regression test: no single message may end or stall a robot server.
Real servers on loopback, real ZeroMQ sockets sending what a careless or hostile client sends."""

import time

import msgpack
import numpy as np
import pytest
import zmq

from tether.robot import protocol
from tether.robot.client import RobotClient, RobotLinkError
from tether.robot.drivers.pointmass import PointMassRobot, pointmass_spec
from tether.robot.safety import SafetyFilter
from tether.robot.server import MAX_CHUNK


def dealer(server, hello_spec=None, role="controller"):
    """A raw DEALER on the server's command socket; with ``hello_spec``, admitted first."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(protocol.endpoints(server.address)[0])
    if hello_spec is not None:
        sock.send(protocol.encode("hello", 1, role=role, client="raw", spec=hello_spec))
        assert sock.poll(5000)
        assert protocol.decode(sock.recv())["type"] == "welcome"
    return sock


def reply(sock, timeout_s=5.0) -> dict:
    assert sock.poll(int(timeout_s * 1000)), "no reply"
    return protocol.decode(sock.recv())


def wait_for(predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def still_serves(server):
    """A well-behaved client can still connect, reset and command: the server is alive."""
    with RobotClient(server.address, spec=server.spec, timeout_s=5) as client:
        state = client.reset(None, 0)
        applied = server.stats.commands_applied
        client.send_action(np.zeros(server.spec.action.shape, np.float32), state["seq"])
        wait_for(lambda: server.stats.commands_applied > applied)


def bad_specs(spec: dict) -> list:
    """The handshake specs of issue 24 (arrays where maps are expected, 0-d arrays) and more."""
    out = []
    for key, value in [("action", np.zeros(3, np.float32)), ("action", np.zeros((), np.float32)),
                       ("observation", np.zeros(2, np.float32)), ("control_rate_hz", float("nan")),
                       ("control_rate_hz", "fast"), ("tasks", 7), ("safety", [1, 2]), ("robot_type", [1])]:
        out.append({**spec, key: value})
    first = next(iter(spec["observation"]))
    out.append({**spec, "observation": {first: np.zeros(4, np.float32)}})
    out.append({**spec, "observation": {first: {**spec["observation"][first], "shape": [2**40]}}})
    out.append({**spec, "observation": {first: {**spec["observation"][first], "dtype": "object"}}})
    out.append({**spec, "action": {**spec["action"], "names": np.zeros(2, np.float32)}})
    out.append({**spec, "action": {**spec["action"], "low": ["a", "b"]}})
    out.append({**spec, "safety": {"max_velocity": [float("inf")] * 2}})
    out.append({**spec, "safety": {"launch": True}})
    return out


@pytest.mark.parametrize("robot", ["pointmass", "arm"])
def test_a_hello_with_a_malformed_spec_is_refused_and_the_server_runs_on(serve, robot):
    if robot == "arm":
        from tether.robot.drivers.arm import ArmRobot

        driver = ArmRobot(("reach",))
    else:
        driver = PointMassRobot(rate_hz=200.0)
    with serve(driver) as server:
        good = server.spec.to_dict()
        specs = bad_specs(good)
        sock = dealer(server)
        for spec in specs:
            sock.send(protocol.encode("hello", 1, role="controller", client="bad", spec=spec))
            answer = reply(sock)
            assert answer["type"] == "refused", spec
            assert any(w in answer["reason"] for w in ("must be", "malformed")), answer["reason"]
        still_serves(server)
    assert server.stats.rejected["handshake"] == len(specs)
    assert "handler_error" not in server.stats.rejected


def test_metaworld_reset_with_a_negative_seed_is_refused_not_fatal(serve):
    pytest.importorskip("metaworld")
    from tether.robot.drivers.metaworld import MetaWorldRobot

    with serve(MetaWorldRobot(("reach-v3",))) as server:
        with RobotClient(server.address, timeout_s=5) as client:
            for seed, message in ((-1, "seed must be an integer"), (2**32, "seed must be an integer")):
                with pytest.raises(RobotLinkError, match=message):
                    client.reset("reach-v3", seed)
            with pytest.raises(RobotLinkError, match="unknown task 'fly'"):
                client.reset("fly", 0)
            assert client.reset("reach-v3", 2**32 - 1)["step"] == 0
    assert server.stats.rejected["bad_reset"] == 3


class FailingReset(PointMassRobot):
    """A driver whose reset fails the way hardware can (a fault of its own, any exception)."""

    def reset(self, task, seed):
        if seed == 13:
            raise ZeroDivisionError("the homing move faulted")
        return super().reset(task, seed)


def test_a_driver_error_on_reset_is_an_error_reply_and_ends_no_server(serve):
    with serve(FailingReset(rate_hz=200.0)) as server:
        with RobotClient(server.address, timeout_s=5) as client:
            client.reset(None, 0)
            with pytest.raises(RobotLinkError, match="reset failed: ZeroDivisionError: the homing move faulted"):
                client.reset(None, 13)
            assert client.latest_state()["done"]  # the half-reset episode does not go on
        still_serves(server)
    assert server.stats.rejected["reset_failed"] == 1


def test_an_exception_while_handling_a_message_is_counted_not_fatal(serve):
    with serve(PointMassRobot(rate_hz=200.0)) as server:
        def broken(action):
            raise KeyError("a bug in a check")

        with RobotClient(server.address, timeout_s=5) as client:
            state = client.reset(None, 0)
            server.safety.check = broken  # fault injection: a bug anywhere in a handler
            client.send_action(np.zeros(2), state["seq"])
            wait_for(lambda: server.stats.rejected["handler_error"] == 1)
            del server.safety.check
        still_serves(server)


def costly(kind: str, size: int, inner: int = 4096) -> bytes:
    from tether.launch.bench_fuzz import costly_frame

    return costly_frame(kind, size, inner)


def test_frames_over_the_limit_are_dropped_before_decoding_and_the_loop_keeps_its_period(serve):
    rate = 100.0
    with serve(PointMassRobot(rate_hz=rate, max_episode_steps=10**6)) as server:
        stranger = dealer(server)
        admitted = dealer(server, server.spec.to_dict())
        with RobotClient(server.address, role="observer") as watcher:
            watcher.latest_state()
            # a peer that has not said hello may send a hello, and no more
            assert server.hello_limits.max_bytes < server.limits.max_bytes <= 64 * 1024
            for kind in ("arrays", "ints", "keys"):
                stranger.send(costly(kind, 2 * server.hello_limits.max_bytes))
                admitted.send(costly(kind, 2 * server.limits.max_bytes))
            wait_for(lambda: server.stats.rejected["too_large"] == 6)
            # issue 24's frames, each under the protocol's 16 MiB: cut off by ZeroMQ unread. Built
            # first: making them holds this process's GIL, which the server thread shares here
            frames = [costly(kind, size) for kind, size in (("arrays", 16_000_000), ("ints", 16_000_000),
                                                              ("keys", 15_000_000))]
            watcher.latest_state()
            for frame in frames:
                stranger.send(frame, copy=False)
                admitted.send(frame, copy=False)
            periods = [watcher.next_state()["timing"]["period_s"] for _ in range(50)]
    # the stall was 3.9 s; a generous bound that a loaded machine keeps but a decode does not
    assert max(periods) < 10 / rate, max(periods)
    assert server.stats.rejected["too_large"] == 6
    assert set(server.stats.rejected) == {"too_large"}


def test_frames_at_the_limit_that_are_costly_to_decode_are_malformed_within_msgpack_limits(serve):
    with serve(PointMassRobot(rate_hz=200.0)) as server:
        limits = server.limits
        for kind, inner, message in (("arrays", 4096, "max_array_len"), ("ints32", 0, "max_array_len"),
                                     ("keys", 0, "max_map_len"), ("arrays", limits.max_array_len, "must be a map"),
                                     ("ints", limits.max_array_len, "must be a map")):
            frame = costly(kind, limits.max_bytes, inner)
            assert limits.max_bytes // 2 < len(frame) <= limits.max_bytes
            with pytest.raises(protocol.ProtocolError, match=message):
                protocol.decode(frame, limits=limits)


def test_integer_and_bool_actions_and_commands_from_the_future_are_rejected(serve):
    with serve(PointMassRobot(rate_hz=200.0)) as server:
        sock = dealer(server, server.spec.to_dict())
        with RobotClient(server.address, role="observer") as watcher:
            sock.send(protocol.encode("reset", 2, task=None, seed=0))
            assert reply(sock)["type"] == "reset_done"
            seq = watcher.latest_state()["seq"]
            sock.send(protocol.encode("command", 3, action=np.array([1, 0], np.int64), ref_seq=seq))
            sock.send(protocol.encode("command", 4, action=np.array([True, False]), ref_seq=seq))
            sock.send(protocol.encode("command", 5, action=np.zeros(2, np.float32), ref_seq=seq + 10**6))
            sock.send(protocol.encode("chunk", 6, actions=np.zeros((4, 2), np.int32), t0=time.monotonic(),
                                      dt=0.005, ref_seq=seq))
            wait_for(lambda: sum(server.stats.rejected.values()) == 4)
    assert server.stats.rejected == {"invalid_action": 3, "future_ref": 1}
    assert server.stats.clipped["bad_dtype"] == 3
    assert server.stats.commands_applied == 0


@pytest.mark.parametrize("body, message", [
    (dict(type="command", ref_seq=-1), "command.ref_seq: -1 outside"),
    (dict(type="command", ref_seq=2**64 - 1), "outside"),
    (dict(type="reset", task="x" * 300, seed=None), "at most 256"),
    (dict(type="estop", reason="x" * 5000), "at most 4096"),
    (dict(type="chunk", t0=float("nan"), dt=0.01, ref_seq=1), "chunk.t0: not finite"),
    (dict(type="chunk", t0=1.0, dt=float("inf"), ref_seq=1), "chunk.dt: not finite"),
    (dict(type="hello", role="controller" * 10, client="c", spec=None), "hello.role"),
    (dict(type="heartbeat", seq=-5), "heartbeat.seq"),
    (dict(type="heartbeat", v=np.zeros(3, np.float32)), "protocol version"),  # crashed the server once
    (dict(type=np.zeros(3, np.float32)), "unknown message type"),
    (dict(type="heartbeat", seq=np.zeros(3, np.int64)), "integer 'seq'"),
])
def test_schema_bounds_every_field(body, message):
    full = {"v": 1, "seq": 1, "t": 0.0, "action": np.zeros(2, np.float32), "actions": np.zeros((2, 2), np.float32),
            **body}
    with pytest.raises(protocol.ProtocolError, match=message):
        protocol.decode(msgpack.packb(full, default=protocol._default, use_bin_type=True))


def test_decode_limits_bound_containers_and_arrays():
    limits = protocol.DecodeLimits.for_robot(pointmass_spec(100.0), MAX_CHUNK)
    command = protocol.encode("command", 1, action=np.zeros(2, np.float32), ref_seq=0)
    assert protocol.decode(command, limits=limits)["type"] == "command"
    chunk = protocol.encode("chunk", 1, actions=np.zeros((MAX_CHUNK, 2), np.float32), t0=0.0, dt=0.01, ref_seq=0)
    assert len(chunk) <= limits.max_bytes and protocol.decode(chunk, limits=limits)["type"] == "chunk"
    hello = protocol.encode("hello", 1, role="controller", client="c", spec=pointmass_spec(100.0).to_dict())
    assert protocol.decode(hello, limits=limits)["type"] == "hello"
    for frame, message in [
        (protocol.pack({"v": 1, "type": "heartbeat", "seq": 1, "t": 0.0, "x": [0] * 1000}), "max_array_len"),
        (protocol.pack({"v": 1, "type": "heartbeat", "seq": 1, "t": 0.0, "x": {str(i): 0 for i in range(1000)}}),
         "max_map_len"),
        (protocol.pack({"v": 1, "type": "heartbeat", "seq": 1, "t": 0.0, "x": [np.zeros(1)] * 3}), "more than 2 arrays"),
    ]:
        with pytest.raises((protocol.ProtocolError, ValueError), match=message):
            protocol.decode(frame, limits=limits)


def test_the_safety_filter_refuses_integer_actions_with_a_reason():
    f = SafetyFilter(pointmass_spec(100.0))
    for bad in (np.array([1, 0]), np.array([True, False])):
        with pytest.raises(ValueError, match="dtype"):
            f.check(bad)
    assert f.counts["bad_dtype"] == 2
    assert f.check(np.array([0.5, 0.0], np.float64)).dtype == np.float32  # float64 -> float32 is fine
