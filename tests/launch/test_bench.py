"""`tether bench loop` produces its report (the figures themselves are measured by hand)."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.realtime  # see tests/conftest.py: runs alone under pytest-xdist


def test_bench_loop_reports_every_figure_per_rate_under_a_fuzzer(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tether.launch.cli", "bench", "loop", "--rate", "200,1000", "--duration", "1",
         "--baseline-duration", "0.5", "--fuzz-rate", "500", "--out", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["policy"] == "mlp" and [r["rate_hz"] for r in result["rates"]] == [200, 1000]
    for r in result["rates"]:
        for phase in (r, r["baselines"]["transport"], r["baselines"]["torch_eager"]):
            assert phase["achieved_rate_hz"] > r["rate_hz"] / 2
            assert phase["cycle_period_us"]["n"] > 50 and phase["policy_step_us"]["n"] > 20
            assert 0 < phase["policy_step_us"]["p50"] <= phase["policy_step_us"]["p99"]
        assert set(r["checks"]) == {"rate_ge_99_5pct", "jitter_le_200us", "overruns_le_0_1pct",
                                    "policy_step_p99_le_1_5x_transport_plus_inference"}
        assert r["server"]["ticks"] > r["rate_hz"] and 0 <= r["overrun_fraction"] <= 1
        assert r["server"]["rejected"].get("malformed", 0) > 50  # the fuzzer ran beside the controller
    assert (tmp_path / "loop_histograms.png").stat().st_size > 0
    assert json.loads((tmp_path / "loop.json").read_text())["rates"][1]["rate_hz"] == 1000


def test_bench_loop_rejects_a_bad_rate_list():
    proc = subprocess.run([sys.executable, "-m", "tether.launch.cli", "bench", "loop", "--rate", "100,fast"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--rate '100,fast'" in proc.stderr


def test_bench_record_reports_every_figure():
    proc = subprocess.run(
        [sys.executable, "-m", "tether.launch.cli", "bench", "record", "--cameras", "2", "--size",
         "160x120", "--duration", "3", "--episode-s", "1", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["episodes"] >= 2 and result["frames"] >= 45  # a loaded machine ticks late
    assert set(result["per_camera"]) == {"cam0", "cam1"}
    for cam in result["per_camera"].values():
        assert cam["used"] + cam["dropped"] <= cam["captured"] + 1
    assert result["mb_per_minute"] > 0 and result["cpu_cores"]["recorder"] > 0
    assert result["checks"]["videos_hold_every_frame"]


def test_bench_record_rejects_a_bad_size():
    proc = subprocess.run(
        [sys.executable, "-m", "tether.launch.cli", "bench", "record", "--size", "640by480"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "WIDTHxHEIGHT" in proc.stderr


def test_bench_policy_times_onnxruntime_and_torch_on_the_same_inputs(capsys, one_thread, cli_error):
    # In this process (the bench sets torch to one thread; the fixture restores it): a process of its
    # own paid 9 s more for importing torch and warming up its ONNX exporter.
    from tether.launch.cli import main

    main(["bench", "policy", "--policy", "gcbc", "--actions", "20", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "gcbc" and result["num_steps"] is None  # (BESO: the same path, slower export)
    for backend in ("onnxruntime_ms", "torch_eager_ms"):
        assert result[backend]["n"] == 20 and 0 < result[backend]["p50"] <= result[backend]["p99"]
    assert "policy.pt or one of" in cli_error("bench", "policy", "--policy", "nope.pt")


@pytest.mark.slow
def test_bench_policy_visuomotor_preset_feeds_two_cameras(capsys, one_thread):
    from tether.launch.cli import main

    main(["bench", "policy", "--policy", "beso-image", "--actions", "10", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "beso" and result["cameras"] == {
        "observation.images.corner": [128, 128, 3], "observation.images.wrist": [128, 128, 3]}
    assert "le_10ms_per_action_with_cameras" in result["checks"]
