"""``tether bench fuzz`` against real ``tether serve`` processes: a short run in the default suite,
issue 24's full targets (100k mutated messages per server, big frames, 500 Hz) in the slow one."""

import json

import pytest

from tether.launch.bench_fuzz import FuzzBench, LinkFuzzer, bench_fuzz
from tether.robot import protocol
from tether.robot.drivers.pointmass import pointmass_spec
from tether.robot.server import MAX_CHUNK


def test_the_fuzzer_mutates_every_part_of_the_link_and_decode_raises_only_protocol_errors():
    spec = pointmass_spec(100.0)
    limits = protocol.DecodeLimits.for_robot(spec, MAX_CHUNK)
    fuzzer = LinkFuzzer(spec, limits.max_bytes, seed=1)
    frames = [fuzzer.frames() for _ in range(20_000)]
    assert {"mutated_message", "truncated", "bit_flipped", "multipart", "random_bytes"} <= set(fuzzer.kinds)
    assert any(k.startswith("costly_") for k in fuzzer.kinds)
    valid = 0
    for parts in frames:
        try:
            protocol.decode(parts[0], limits=limits)
            valid += 1
        except protocol.ProtocolError:  # anything else would be a decoder bug (the server counts it)
            pass
    assert 0.1 < valid / len(frames) < 0.6  # valid messages reach the deep paths, most are refused


def test_a_short_fuzz_leaves_the_server_running_with_every_message_counted(tmp_path):
    result = bench_fuzz(FuzzBench(robots=("pointmass",), messages=3000, big_frames=False, out=tmp_path))
    server = result["servers"][0]
    assert server["checks"]["never_exited"] and server["checks"]["every_message_counted"], server
    assert server["checks"]["controller_kept_up"], server["controller_error"]
    assert server["server"]["rejected"]["malformed"] > 500
    assert json.loads((tmp_path / "fuzz.json").read_text())["servers"][0]["messages"] == 3000
    assert (tmp_path / "fuzz_periods.png").stat().st_size > 0


@pytest.mark.slow
def test_issue24_targets_hold_under_100k_mutated_messages_per_server(tmp_path):
    result = bench_fuzz(FuzzBench(messages=100_000, out=tmp_path / "servers"))
    for server in result["servers"]:  # a rate not judged (None) is MetaWorld's, slowed by its own resets
        assert all(v is not False for v in server["checks"].values()), (server["robot"], server["checks"])
        assert server["robot"] == "metaworld" or server["checks"]["rate_ge_99pct"] is True
    fast = bench_fuzz(FuzzBench(robots=("pointmass",), rate_hz=500.0, messages=100_000, big_frames=False,
                                out=tmp_path / "500hz"))["servers"][0]
    assert all(fast["checks"].values()), fast["checks"]
