import msgpack
import numpy as np
import pytest

from tether.robot import protocol
from tether.robot.protocol import ProtocolError, decode, encode, endpoints


def state_fields():
    return dict(
        session=1, episode=3, step=7, task="t", observation={"observation.state": np.arange(4, dtype=np.float32)},
        action=np.ones(2, np.float32), reward=0.5, success=False, done=False, estop=False, events=[],
        timing={"period_s": 0.01, "compute_s": 0.001, "command_age_s": None},
    )


def test_round_trip_keeps_arrays_exactly_and_without_copy():
    image = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    fields = state_fields()
    fields["observation"]["observation.images.c"] = image
    msg = decode(encode("state", 42, **fields))
    assert msg["seq"] == 42 and msg["type"] == "state" and msg["v"] == protocol.PROTOCOL_VERSION
    got = msg["observation"]["observation.images.c"]
    np.testing.assert_array_equal(got, image)
    assert got.dtype == np.uint8 and not got.flags.writeable  # a view on the received frame
    np.testing.assert_array_equal(msg["action"], np.ones(2, np.float32))


def raw(**body):
    return msgpack.packb(body, use_bin_type=True)


@pytest.mark.parametrize(
    "frame, message",
    [
        (b"\xc1\xc1garbage", "not a msgpack message"),
        (raw(v=99, type="heartbeat", seq=1, t=0.0), "protocol version 99"),
        (raw(v=1, type="launch_missiles", seq=1, t=0.0), "unknown message type"),
        (raw(v=1, type="command", seq=1, t=0.0, ref_seq=1), "missing field 'action'"),
        (raw(v=1, type="reset", seq=1, t=0.0, task=3, seed=None), "reset.task: got int"),
        (raw(v=1, type="command", seq=True, t=0.0), "integer 'seq'"),
        (msgpack.packb([1, 2, 3]), "must be a map"),
        (msgpack.packb({"v": 1, "type": "command", "seq": 1, "t": 0.0, "ref_seq": 1,
                        "action": msgpack.ExtType(1, msgpack.packb(["float32", [5]]) + b"\x00" * 3)}),
         "bad array payload"),
        (msgpack.packb({"v": 1, "type": "command", "seq": 1, "t": 0.0, "ref_seq": 1,
                        "action": msgpack.ExtType(1, msgpack.packb(["object", [1]]) + b"\x00" * 8)}),
         "bad array header"),
        (msgpack.packb({"v": 1, "type": "command", "seq": 1, "t": 0.0, "ref_seq": 1,
                        "action": msgpack.ExtType(9, b"")}), "unknown extension type 9"),
    ],
)
def test_malformed_messages_raise_protocol_error(frame, message):
    with pytest.raises(ProtocolError, match=message):
        decode(frame)


def test_size_limit():
    frame = encode("command", 1, action=np.zeros(1000, np.float32), ref_seq=0)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decode(frame, max_bytes=100)


def test_bool_is_not_an_int():
    with pytest.raises(ProtocolError, match="got a bool"):
        decode(raw(v=1, type="reset", seq=1, t=0.0, task=None, seed=True))


def test_endpoints():
    assert endpoints("tcp://127.0.0.1:5555") == ("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556")
    assert endpoints("ipc:///tmp/robot") == ("ipc:///tmp/robot.cmd", "ipc:///tmp/robot.state")
    for bad in ("udp://x:1", "tcp://127.0.0.1", "tcp://:5", "ipc://"):
        with pytest.raises(ValueError):
            endpoints(bad)
