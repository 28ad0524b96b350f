"""``tether finetune``: a tiny end-to-end WSRL run on the point-mass server (actor process +
learner), its outputs and version tags, and one-line errors for what is not there yet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tether.launch.cli import main
from tether.policies.calql import CalQl
from tether.policies.configs import CalQlConfig, IqlConfig, SacConfig
from tether.policies.data import Normalizer
from tether.policies.offline import save_offline_policy
from tether.policies.replay import ReplayBuffer
from tether.robot.drivers.pointmass import TASK, PointMassRobot, pointmass_spec
from tether.robot.runner import PolicyRunner

RATE = 50.0


pytestmark = pytest.mark.usefixtures("one_thread")


def calql_checkpoint(path):
    cfg = CalQlConfig(sac=SacConfig(hidden=(16, 16), critics=4), actions=2)
    dims = {"obs_dim": 4, "action_dim": 2, "goal_dim": 1, "camera": None, "image_shape": None}
    normalizer = Normalizer(np.zeros(4), np.full(4, 0.3), np.zeros(2), np.ones(2))
    return save_offline_policy(path, "calql", CalQl(cfg, 4, 2, 1), IqlConfig(), dims, normalizer, [TASK],
                               pointmass_spec(RATE), cfg, {"column": "next.reward", "normalization": "none",
                                                           "shift": 0.0})



def test_finetune_wsrl_end_to_end_on_the_point_mass(tmp_path, serve, capsys):
    ckpt = calql_checkpoint(tmp_path / "policy.pt")
    out = tmp_path / "ft"
    with serve(PointMassRobot(rate_hz=RATE, max_episode_steps=40), lockstep=True) as server:
        main(["finetune", "run", "--robot", server.address, "--policy", str(ckpt), "--algo", "wsrl",
              "--out", str(out), "--steps", "300", "--online.warmup-steps", "80", "--online.publish-every", "25",
              "--online.batch-size", "32", "--online.utd", "1", "--eval-every", "3"])
    # the training episode that passes 300 steps ends it: 8 of them, and an evaluation after every 3
    assert "fine-tuned (wsrl): 10 episodes" in capsys.readouterr().out
    episodes = json.loads((out / "episodes.json").read_text())
    assert [bool(e.get("eval")) for e in episodes] == [False] * 3 + [True] + [False] * 3 + [True] + [False] * 2
    assert all(e["length"] == 40 for e in episodes)
    progress = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    assert progress[-1]["transitions"] == 320 and progress[-1]["updates"] > 0  # evaluations are not trained on
    assert progress[0]["phase"] == "warm-up" and progress[-1]["phase"] == "training"
    assert progress[0]["updates"] == 0  # WSRL: the frozen policy collects first
    assert all(p["updates"] <= max(0, p["transitions"] - 80) for p in progress)  # never above UTD 1
    buffer = ReplayBuffer.load(out / "buffer.npz", 1000)
    versions = buffer.version[: len(buffer)]
    assert versions[0] == 1 and np.all(np.diff(versions) >= 0)  # v1 (frozen) first, never older later
    assert not buffer.intervention[: len(buffer)].any()
    assert (out / "finetune.png").stat().st_size > 1000 and (out / "weights" / "v1.onnx").exists()
    runner = PolicyRunner(out / "policy.onnx")
    assert runner.meta["kind"] == "sac" and runner.noise_shape is None  # the mean, for tether eval
    assert PolicyRunner(out / "weights" / "v1.onnx").meta["stochastic"] is True
    assert "episode 8" in (out / "actor.log").read_text()


def test_finetune_errors_are_one_line(tmp_path, capsys, monkeypatch, cli_error):
    ckpt = calql_checkpoint(tmp_path / "policy.pt")
    monkeypatch.delenv("TETHER_VLM_MODEL", raising=False)
    assert "no VLM model name" in cli_error("finetune", "run", "--policy", ckpt, "--reward", "vlm")
    assert "needs --classifier" in cli_error("finetune", "run", "--policy", ckpt, "--reward", "classifier")
    assert "no classifier at" in cli_error("finetune", "run", "--policy", ckpt, "--reward", "classifier",
                                       "--classifier", tmp_path / "c.onnx")
    assert "go with --reward classifier" in cli_error("finetune", "actor", "--threshold", "0.5")
    assert "no checkpoint" in cli_error("finetune", "run", "--policy", tmp_path / "none.pt")
    assert "--steps must be >= 1" in cli_error("finetune", "run", "--policy", ckpt, "--steps", "0")


def test_run_hands_its_actor_settings_to_the_actor_process():
    import tyro

    from tether.launch.finetune import ActorCommand, _ActorArgs, _changed_flags
    from tether.perception.labellers import VLMConfig
    from tether.robot.teleop import TeleopConfig
    from tether.robot.teleop.config import KeyboardOptions

    settings = _ActorArgs(classifier=Path("c.onnx"), threshold=0.9, vlm=VLMConfig(model="m", temperature=0.5),
                          intervene="keyboard", teleop=TeleopConfig(invert=("y", "yaw"), keyboard=KeyboardOptions(fd=5)))
    flags = _changed_flags(settings, _ActorArgs())
    actor = tyro.cli(ActorCommand, args=flags)
    for name in ("classifier", "threshold", "vlm", "intervene", "teleop"):
        assert getattr(actor, name) == getattr(settings, name), name


def test_compare_reports_dip_steps_to_target_and_final(tmp_path, capsys, cli_error):
    def run(name, successes, per_episode=1000, evaluations=()):
        folder = tmp_path / name
        folder.mkdir()
        episodes = [{"success": s, "transitions": (k + 1) * per_episode, "return": 0.0, "length": per_episode,
                     "interventions": 0, "eval": k in evaluations} for k, s in enumerate(successes)]
        (folder / "episodes.json").write_text(json.dumps(episodes))
        return folder

    wsrl = run("wsrl", [1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    rlpd = run("rlpd", [0] * 12)
    # acting episodes all fail; its evaluations (mean action) succeed
    evaluated = run("evaluated", [0, 1, 0, 1, 0, 1], evaluations=(1, 3, 5))
    (wsrl / "progress.jsonl").write_text('{"updates": 10, "utd": 0.5}\n{"updates": 3000, "utd": 0.25}\n')
    (tmp_path / "offline").mkdir()
    (tmp_path / "offline" / "eval.json").write_text(json.dumps({"success_rate": 0.5, "success_ci95": [0.3, 0.7],
                                                                "episodes": 20}))
    main(["finetune", "compare", str(wsrl), str(rlpd), str(evaluated), "--offline", str(tmp_path / "offline"),
          "--out", str(tmp_path / "cmp"), "--window", "2", "--dip-steps", "5000", "--target", "0.8"])
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    # smoothed over 2 episodes: (1 over one episode: not a full window), 1, .5, 0, .5, 1, ...
    assert result["runs"]["wsrl"] == {"episodes": 12, "steps": 12000, "initial_dip": 0.0,
                                      "steps_to_target": 2000, "final": 1.0, "updates": 3000, "utd": 0.25,
                                      "curve": "acting"}
    assert result["runs"]["rlpd"]["steps_to_target"] is None and result["offline"]["success"] == 0.5
    assert result["runs"]["evaluated"] == {
        "episodes": 3, "steps": 6000, "initial_dip": 1.0, "steps_to_target": 4000, "final": 1.0, "updates": None,
        "utd": None, "curve": "evaluation"}
    printed = capsys.readouterr().out
    assert "| rlpd | 12 acting | 12000 | 0% | never | 0% | n/a | n/a |" in printed  # no learner progress: an actor's
    assert "| wsrl | 12 acting | 12000 | 0% | 2000 | 100% | 3000 | 0.25 |" in printed
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000
    assert "no episodes.json" in cli_error("finetune", "compare", tmp_path / "offline")


def test_bench_finetune_measures_the_control_rate_alone_and_beside_a_learner(capsys):
    main(["bench", "finetune", "--duration", "2", "--rate", "50", "--hidden", "32", "32", "--batch-size", "32",
          "--json"])
    result = json.loads(capsys.readouterr().out)
    for phase in ("alone", "training"):
        assert result[phase]["ticks"] > 50 and 0 < result[phase]["control_rate_hz"] <= 55
    assert result["checks"]["learner_trained"] and result["learner_updates"] > 0
    assert result["control_rate_drop"] == pytest.approx(
        1 - result["training"]["control_rate_hz"] / result["alone"]["control_rate_hz"])


def test_actor_refuses_a_policy_file_given_as_classifier(tmp_path, capsys, cli_error):
    ckpt = calql_checkpoint(tmp_path / "policy.pt")
    from tether.launch.export import ExportCommand, export

    onnx, _, _ = export(ExportCommand(ckpt))
    assert "not a tether success classifier" in cli_error("finetune", "actor", "--reward", "classifier",
                                                        "--classifier", onnx)
