"""tether train --algo gciql: a bad goal mixture is one line; end to end (slow) on OGBench
cube-single play data recorded through a robot server, evaluated with tether eval --sim on
OGBench's goals through the ONNX runner's observation.goal input, and its critic ranking a BESO
policy's samples (tether eval --critic --candidates)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from tether.launch.cli import main  # noqa: E402


def test_bad_goal_mixture_is_one_line(tmp_path, capsys):
    import numpy as np

    from tether.robot.dataset import DatasetWriter
    from tether.robot.spec import Feature, RobotSpec

    spec = RobotSpec("test", 20.0, {"observation.state": Feature("float32", (3,))},
                     Feature("float32", (2,), low=(-1.0,) * 2, high=(1.0,) * 2), tasks=("play",))
    DatasetWriter(tmp_path / "ds", spec, fps=20).add_episode(
        {"observation.state": np.zeros((5, 3), np.float32), "action": np.zeros((5, 2), np.float32)}, "play")
    with pytest.raises(SystemExit):
        main(["train", str(tmp_path / "ds"), "--algo", "gciql", "--out", str(tmp_path / "out"),
              "--gciql.value-p-randomgoal", "0.5"])
    err = capsys.readouterr().err.strip()
    assert "value goal probabilities" in err and "sum to 1" in err and "\n" not in err


@pytest.mark.slow
def test_ogbench_play_to_gciql_to_eval(tmp_path, capsys):
    pytest.importorskip("ogbench")
    ds = tmp_path / "play"
    main(["collect", str(ds), "--env", "ogbench:cube-single", "--episodes", "2", "--episode-steps", "100",
          "--cameras"])
    out = tmp_path / "gciql"
    main(["train", str(ds), "--algo", "gciql", "--out", str(out), "--optim.steps", "40",
          "--optim.checkpoint-every", "20", "--gciql.hidden", "32", "32"])
    assert "gciql on 198 transitions" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["parity"] <= 1e-4 and report["transitions"] == 198
    assert {p.name for p in (out / "checkpoints").glob("*.onnx")} == {"policy_20.onnx", "policy_40.onnx"}
    main(["eval", str(out / "policy.onnx"), "--sim", "ogbench:cube-single", "--episodes", "1",
          "--max-episode-steps", "10", "--out", str(tmp_path / "ev")])
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert list(ev["tasks"]) == ["task1", "task2", "task3", "task4", "task5"] and ev["episodes"] == 5
    # value-guided BESO: its samples ranked by the GCIQL critic train_gciql wrote beside the actor
    assert report["critic_parity"] <= 1e-4
    main(["train", str(ds), "--algo", "beso", "--out", str(tmp_path / "beso"), "--goal.kind", "hindsight",
          "--beso.window", "1", "--beso.d-model", "32", "--beso.n-layers", "1", "--optim.steps", "20"])
    main(["eval", str(tmp_path / "beso" / "policy.pt"), "--sim", "ogbench:cube-single", "--episodes", "1",
          "--max-episode-steps", "10", "--critic", str(out / "critic.onnx"), "--candidates", "4",
          "--out", str(tmp_path / "guided")])
    guided = json.loads((tmp_path / "guided" / "eval.json").read_text())
    assert guided["episodes"] == 5 and guided["config"]["candidates"] == 4
    assert guided["config"]["critic"] == str(out / "critic.onnx")
