"""`tether train-sim` end to end (rsl_rl PPO on the vectorized arm -> policy.onnx that
PolicyRunner loads and that runs zero-shot through the ZeroMQ loop against the reality-gap robot),
and `tether bench sim`."""

import csv
import json

import numpy as np
import pytest

from tether.launch import cli

pytest.importorskip("rsl_rl")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_sim")
    cli.main(["train-sim", "--task", "reach", "--num-envs", "8", "--iterations", "2",
              "--randomize", "default", "--eval-episodes", "4", "--out", str(out),
              "--num-threads", "1"])
    return out


def test_train_sim_writes_a_policy_the_runner_loads(trained):
    from tether.robot.runner import PolicyRunner
    from tether.sim import arm

    report = json.loads((trained / "report.json").read_text())
    assert report["iterations"] == 2 and report["env_steps"] == 2 * 24 * 8
    assert report["onnx_parity_max_abs"] < 1e-5
    assert [e["randomize"] for e in report["sim_eval"]] == ["none", "reality_gap"]
    runner = PolicyRunner(trained / "policy.onnx")
    assert runner.meta["kind"] == "ppo" and runner.window == 1 and runner.tasks == ["reach"]
    assert runner.spec.action.shape == (3,)
    runner.reset("reach")
    state = arm.ArmTask("reach").reset(0)
    action = runner.act({"observation.state": state})
    assert action.shape == (3,) and np.all(np.abs(action) <= arm.MAX_EE_STEP)
    rows = list(csv.DictReader((trained / "progress.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    config = json.loads((trained / "config.json").read_text())
    assert config["rsl_rl"]["algorithm"]["class_name"] == "PPO"
    assert config["env"]["randomization"]["name"] == "default"
    # one line per episode started: 8 first episodes, then the auto-resets
    lines = (trained / "randomization.jsonl").read_text().splitlines()
    assert len(lines) >= 8 and {json.loads(x)["env"] for x in lines} == set(range(8))
    assert len(list((trained / "rsl_rl").glob("events.out.tfevents.*"))) == 1


def test_policy_runs_zero_shot_on_the_reality_gap_server(trained, serve):
    """The deployment path: the exported policy through tether eval (onnxruntime, ZeroMQ) against
    the reality-gap arm served lock-step."""
    from tether.robot.drivers.arm import ArmRobot

    robot = ArmRobot(("reach",), max_episode_steps=20, randomize="reality_gap")
    with serve(robot, lockstep=True) as server:
        cli.main(["eval", str(trained / "policy.onnx"), "--robot", server.address, "--episodes", "2",
                  "--out", str(trained / "eval"), "--progress-lines"])
    result = json.loads((trained / "eval" / "eval.json").read_text())
    assert result["mode"] == "robot" and len(result["per_episode"]) == 2
    assert all(e["length"] <= 20 for e in result["per_episode"])


def test_train_sim_refuses_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train-sim", "--randomize", "nope", "--out", str(tmp_path / "x"), "--iterations", "1"])
    assert e.value.code == 2 and "unknown randomization" in capsys.readouterr().err


def test_bench_sim_reports_rates_against_both_baselines(capsys):
    cli.main(["bench", "sim", "--num-envs", "1,64", "--duration", "0.1", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert [r["num_envs"] for r in result["rows"]] == [1, 64]
    for row in result["rows"]:
        assert row["vec"] > 0 and row["sync"] > 0 and row["raw"] > 0 and row["raw_threaded"] > 0
        assert row["speedup_vs_sync"] == pytest.approx(row["vec"] / row["sync"])
        assert row["overhead_vs_raw"] == pytest.approx(row["raw"] / row["vec"])
    assert set(result["checks"]) == {"speedup_vs_sync_ge_3x_at_64", "overhead_vs_raw_le_1_5x_at_64"}
