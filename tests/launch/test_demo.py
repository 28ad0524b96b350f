"""`tether demo` end to end. The default suite runs a small demo (one task, 10 demos, 300 steps, 5
evaluation episodes: well under a minute on 2 cores); --quick (about 3 min) and the full run (about
9 min) are marked slow."""

import json
import os
import subprocess
import sys

import pytest

from tether.launch.demo import DemoCommand, eval_server_args
from tether.robot.dataset import Dataset
from tether.robot.runner import PolicyRunner
from tether.robot.video import read_mp4

# Not marked realtime (it shares the cores with the other pytest-xdist worker's tests): collection
# and evaluation are lock-stepped, so a slower machine slows the demo down but holds no tick unless
# the policy takes a whole control period (12.5 ms) to answer. Beside one and two busy cores the
# small demo held 1, 0, 0 and 0 of about 550 ticks (bar: 1%) and scored 0.6 each time, as alone.

TASKS = ("reach-v3", "drawer-open-v3", "button-press-topdown-v3")
# The same path as `tether demo --quick` (scripted experts through a robot server, BESO, ONNX export,
# a lock-stepped evaluation from a torch-free process over ZeroMQ), small. 300 steps need a faster EMA
# than the default 0.999, whose weights would still hold 0.999^300 = 74% of the first step's.
SMALL = ("--tasks", "reach-v3", "--demos-per-task", "10", "--train-steps", "300", "--batch-size", "64",
         "--ema-decay", "0.98", "--eval-episodes", "5", "--image-size", "64")


def run_demo(out, *args, env=None):
    proc = subprocess.run(
        [sys.executable, "-m", "tether.launch.cli", "demo", "--out", str(out), *args],
        capture_output=True, text=True, timeout=1200, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "report.json").read_text())


def check_report(out, report, min_success, tasks=TASKS, episodes=20, image_size=128):
    assert report["success_rate"] >= min_success, report["tasks"]
    assert set(report["tasks"]) == set(tasks)
    for task, r in report["tasks"].items():
        assert r["episodes"] >= episodes
        assert 0 < r["mean_episode_length"] <= 200
        frames = read_mp4(report["videos"][task])
        assert frames.shape[1:] == (image_size, image_size, 3) and len(frames) > 10
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"]
    assert set(report["timings_s"]) >= {"collect", "train", "eval"}
    assert report["evaluation"]["runner_imported_torch"] is False
    # Lock-stepped, a tick waits up to a period (12.5 ms) for the policy (1-3 ms here), so ticks are
    # held only on a scheduling hiccup, however slowly this machine renders the camera (in real
    # time on 2 cores about half of them were).
    evaluation = report["evaluation"]
    ticks = sum(r["mean_episode_length"] * r["episodes"] for r in report["tasks"].values())
    assert evaluation["lockstep"] is True and evaluation["ticks"] == pytest.approx(ticks)
    assert evaluation["held_ticks"] <= 0.01 * evaluation["ticks"]
    assert f"ticks held for want of a command: {evaluation['held_ticks']} of" in (out / "report.md").read_text()
    assert report["policy"]["onnx_torch_max_abs_diff"] <= 1e-4
    # evaluation seeds never overlap the collection seeds
    assert report["evaluation"]["seeds"][0] > report["collection"]["seeds"][1]
    for name in ("report.md", "report.png", "config.json"):
        assert (out / name).stat().st_size > 0
    dataset = Dataset(report["dataset"])
    assert len(dataset) == report["collection"]["episodes"] and sorted(dataset.tasks) == sorted(tasks)
    assert "observation.images.corner" in dataset.video_keys
    runner = PolicyRunner(report["policy"]["onnx"])
    assert runner.spec.control_rate_hz == 80.0 and runner.meta["num_steps"] == 3
    assert report["policy"]["parameters"] == runner.meta["parameters"]


def test_no_lockstep_evaluates_on_a_real_time_server():
    address = "tcp://127.0.0.1:5555"
    assert "--lockstep" in eval_server_args(DemoCommand(), address)
    real_time = eval_server_args(DemoCommand(lockstep=False), address)
    assert "--lockstep" not in real_time and real_time[:3] == ["serve", "--address", address]


def test_small_demo_end_to_end(tmp_path):
    """The bar: an untrained policy (1 step) scored 0.2 (1 of 5); these 300 steps scored 0.6, 0.8,
    0.8 and 0.8 at training seeds 0 to 3, each holding at most 1 of about 400 lock-stepped ticks.
    Torch on one thread: on two shared cores, two threads made the 300 steps take 14 to 51 s, one
    thread 14 to 20 s."""
    out = tmp_path / "demo"
    report = run_demo(out, *SMALL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    check_report(out, report, min_success=0.4, tasks=("reach-v3",), episodes=5, image_size=64)
    assert report["collection"]["episodes"] == 10 and report["collection"]["expert_success_rate"] == 1.0
    assert json.loads((out / "config.json").read_text())["ema_decay"] == 0.98


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    check_report(out, run_demo(out, "--quick"), min_success=0.5)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 9 min alone on 2 cores, above the suite's 600 s per test
def test_full_demo(tmp_path):
    out = tmp_path / "demo"
    check_report(out, run_demo(out), min_success=0.8)
