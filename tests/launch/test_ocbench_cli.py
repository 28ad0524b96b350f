"""OCBench through tether's verbs: tether collect --env ocbench:NAME through a robot server into a
dataset, tether train --algo bc, tether eval --sim ocbench:NAME with videos; bad names in one line."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ocbench")

from tether.launch.cli import main  # noqa: E402


@pytest.mark.parametrize("env,message", [("ocbench:block-lite-singel", "did you mean block-lite-single"),
                                         ("ocbench:nothing", "tether serves: block-lite-single")])
def test_collect_refuses_unknown_envs_in_one_line(tmp_path, capsys, env, message):
    with pytest.raises(SystemExit):
        main(["collect", str(tmp_path / "ds"), "--env", env, "--episodes", "1"])
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_collect_refuses_an_unknown_task(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["collect", str(tmp_path / "ds"), "--env", "ocbench:block-lite-double", "--tasks", "task3"])
    assert "unknown task 'task3'" in capsys.readouterr().err


def test_the_progress_total_counts_episodes_per_task(tmp_path):
    from tether.launch.collect import CollectConfig, planned_episodes

    ds = tmp_path / "ds"
    assert planned_episodes(CollectConfig(ds, env="ocbench:block-lite-double", episodes=3)) == 6
    assert planned_episodes(CollectConfig(ds, env="ocbench:block-lite-double", episodes=3, tasks=("task2",))) == 3
    assert planned_episodes(CollectConfig(ds, tasks=("reach-v3", "drawer-open-v3"), episodes=3)) == 6
    assert planned_episodes(CollectConfig(ds, env="ogbench:scene", episodes=3)) == 3
    assert planned_episodes(CollectConfig(ds, env="ocbench:nothing", episodes=3)) == 3  # collect names the error


@pytest.mark.slow
def test_collect_train_eval(tmp_path, capsys):
    ds = tmp_path / "ds"
    main(["collect", str(ds), "--env", "ocbench:block-lite-single", "--episodes", "2"])
    assert "2 episodes" in capsys.readouterr().out
    from tether.robot.dataset import Dataset

    d = Dataset(ds)
    assert d.spec.robot_type == "ocbench-block-lite-single" and len(d) == 2
    assert "observation.images.front_pixels" in d.features
    main(["train", str(ds), "--algo", "bc", "--out", str(tmp_path / "bc"), "--optim.steps", "20",
          "--iql.hidden", "32", "32"])
    main(["eval", str(tmp_path / "bc" / "policy.onnx"), "--sim", "ocbench:block-lite-single", "--episodes", "2",
          "--max-episode-steps", "15", "--out", str(tmp_path / "ev")])
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["episodes"] == 2 and list(report["tasks"]) == ["task1"]
    assert all(e["length"] == 15 for e in report["per_episode"])  # 20 steps of BC do not solve it
    assert list((tmp_path / "ev" / "videos").glob("*.mp4"))
