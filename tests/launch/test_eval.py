"""`tether eval`: robot-server mode equals direct simulation episode for episode, the operator
protocol through a real pty, compare's verdicts, and success/failure videos.

The policies are linear controllers written straight as ONNX graphs with tether metadata (no
torch, fully deterministic), with a ``noise`` input like BESO's, scaled into the action, so the
runner's per-episode noise seeding is part of what must agree between the paths.
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tether.launch import cli, processes
from tether.launch.eval import EvalCommand, VideoQuota, choose_videos
from tether.launch.eval_sim import evaluate_sim
from tether.policies.export import save_onnx
from tether.robot.drivers.pointmass import PointMassRobot, pointmass_spec
from tether.robot.video import read_mp4
from tether.sim.metaworld import metaworld_spec


def linear_policy(path, spec, weights, noise_scale=0.0):
    """A tether ONNX policy (window 1) for ``spec``: action = clip(obs @ weights + noise_scale *
    noise, low, high); ``goal`` is an input (the runner feeds it) that the graph ignores."""
    s, a = weights.shape
    inits = [
        numpy_helper.from_array(np.asarray(weights, np.float32), "W"),
        numpy_helper.from_array(np.float32(noise_scale).reshape(()), "sigma"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.asarray(spec.action.low, np.float32), "low"),
        numpy_helper.from_array(np.asarray(spec.action.high, np.float32), "high"),
    ]
    nodes = [
        helper.make_node("Squeeze", ["obs", "axis1"], ["o"]),
        helper.make_node("MatMul", ["o", "W"], ["ow"]),
        helper.make_node("Squeeze", ["noise", "axis1"], ["n"]),
        helper.make_node("Mul", ["n", "sigma"], ["ns"]),
        helper.make_node("Add", ["ow", "ns"], ["raw"]),
        helper.make_node("Max", ["raw", "low"], ["lo"]),
        helper.make_node("Min", ["lo", "high"], ["action"]),
    ]
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["B", 1, s]),
         helper.make_tensor_value_info("goal", TensorProto.FLOAT, ["B", len(spec.tasks)]),
         helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["B", 1, a])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["B", a])],
        inits,
    )
    # IR 9: what the installed onnxruntime reads (onnx's newest IR can be ahead of it).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    meta = {"kind": "mlp", "window": 1, "goal": {"kind": "task_one_hot", "tasks": list(spec.tasks)},
            "parameters": int(weights.size)}
    return save_onnx(model, {"tether.spec": spec.to_json(), "tether.policy": json.dumps(meta)}, path)


def pointmass_policy(path):
    """P-controller towards the origin plus noise, at 10 Hz: with 12 ticks, seeds 3..8 give three
    successes and three failures."""
    weights = np.zeros((4, 2))
    weights[0, 0] = weights[1, 1] = -2.0
    return linear_policy(path, pointmass_spec(10.0), weights, noise_scale=0.2)


def tether(*args, timeout=120):
    return subprocess.run(processes.tether_command(*args), capture_output=True, text=True,
                          timeout=timeout)


def outcomes(results):
    return [(e["seed"], e["success"], e["length"], e["return"]) for e in results["per_episode"]]


def test_robot_server_in_another_process_equals_direct_sim(tmp_path):
    """Same seeds, deterministic policy: per-episode success, return and length are identical
    (exact floats) between a `tether serve --lockstep` process and direct simulation, with 1 and
    2 parallel envs. Lockstep ticks as soon as the policy answers, but still holds the robot after
    one period (100 ms here) without an answer; `held_ticks` 0 proves no tick of an episode went
    without the policy's command."""
    policy = pointmass_policy(tmp_path / "pm.onnx")
    address = processes.free_tcp_address()
    server = processes.start(["serve", "--robot", "pointmass", "--rate-hz", "10", "--lockstep",
                              "--max-episode-steps", "12", "--address", address], tmp_path / "serve.log")
    try:
        processes.wait_for_server(address, server)
        proc = tether("eval", str(policy), "--robot", address, "--out", str(tmp_path / "robot"),
                      "--episodes", "6", "--seed", "3", "--progress-lines")
    finally:
        processes.stop(server)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    robot = json.loads((tmp_path / "robot" / "eval.json").read_text())
    assert robot["torch_imported"] is False and robot["mode"] == "robot"
    # An episode with a held tick (a starved machine missed a 100 ms deadline) legitimately
    # differs from lock-step; it must be flagged, and most episodes must be on time.
    on_time = [e["held_ticks"] == 0 for e in robot["per_episode"]]
    assert sum(on_time) >= 4, robot["per_episode"]
    assert bool(robot["warnings"]) == (not all(on_time))

    sims = []
    for k in (1, 2):
        sim = evaluate_sim(EvalCommand(policy, sim="pointmass", num_envs=k, episodes=6, seed=3,
                                       max_episode_steps=12, out=tmp_path / f"sim{k}"))
        assert [o for o, ok in zip(outcomes(sim), on_time) if ok] == \
            [o for o, ok in zip(outcomes(robot), on_time) if ok], k
        sims.append(outcomes(sim))
    assert sims[0] == sims[1]  # parallel workers change nothing
    assert 0 < sum(o[1] for o in sims[0]) < 6  # both outcomes occur: the comparison means something
    successes = [e["success"] for e in robot["per_episode"]]

    # The report: Wilson interval, LeRobot-style aggregate, link timing, files.
    assert robot["pc_success"] == pytest.approx(100 * sum(successes) / 6)
    lo, hi = robot["success_ci95"]
    assert 0 < lo < robot["success_rate"] < hi < 1
    assert robot["aggregated"]["avg_sum_reward"] == pytest.approx(
        np.mean([e["return"] for e in robot["per_episode"]]))
    link = robot["link"]
    assert link["period_ms"]["target"] == 100.0 and link["period_ms"]["p50"] < 50  # lockstep: faster
    assert 0 < link["command_latency_ms"]["p50"] <= link["command_latency_ms"]["p99"]
    assert 0 < robot["latency_ms"]["p50"] <= robot["latency_ms"]["p99"]
    for name in ("eval.md", "eval.png"):
        assert (tmp_path / "robot" / name).stat().st_size > 0
    assert "95% Wilson CI" in (tmp_path / "robot" / "eval.md").read_text()



def test_deterministic_feeds_zero_noise_in_every_worker(tmp_path):
    """--deterministic: the noisy controller's episodes are those of the same controller without
    noise, also in worker processes (--num-envs 2); without it they differ."""
    noisy = pointmass_policy(tmp_path / "noisy.onnx")
    weights = np.zeros((4, 2))
    weights[0, 0] = weights[1, 1] = -2.0
    clean = linear_policy(tmp_path / "clean.onnx", pointmass_spec(10.0), weights)
    common = dict(sim="pointmass", episodes=6, seed=3, max_episode_steps=12)
    reference = outcomes(evaluate_sim(EvalCommand(clean, out=tmp_path / "clean", **common)))
    zero = evaluate_sim(EvalCommand(noisy, out=tmp_path / "zero", deterministic=True, num_envs=2, **common))
    sampled = evaluate_sim(EvalCommand(noisy, out=tmp_path / "sampled", **common))
    assert sorted(outcomes(zero)) == sorted(reference) and zero["config"]["deterministic"]
    assert outcomes(sampled) != reference


def test_operator_protocol_through_a_pty(serve, tmp_path, pipe_lines, wait_until):
    """Keys on a real pseudo-terminal: start, success, re-do, failure, abort, the e-stop
    (trips the server's, then must be cleared before the next start) and a verdict after the
    server ends an episode. The policy stands still, so only the operator or the step limit
    (1.5 s) ends an episode."""
    policy = linear_policy(tmp_path / "still.onnx", pointmass_spec(20.0), np.zeros((4, 2)))
    master, slave = os.openpty()
    with serve(PointMassRobot(rate_hz=20.0, max_episode_steps=30)) as server:
        proc = subprocess.Popen(
            processes.tether_command("eval", str(policy), "--robot", server.address, "--operator",
                                     "--episodes", "5", "--seed", "3", "--out", str(tmp_path / "op")),
            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        os.close(slave)
        out = pipe_lines(proc.stdout)

        def key(k, then):
            os.write(master, k)
            out.wait_for(then)

        try:
            out.wait_for("Safety layer on")
            out.wait_for("press Enter to start")
            key(b"\r", "running")
            key(b"s", "recorded: success")  # episode 0: judged a success mid-run
            out.wait_for("press Enter to start")
            key(b"\r", "running")
            key(b"r", "re-do")  # episode 1: discarded, run again with its seed
            out.wait_for("[reach-origin 2/5, seed 4]")
            key(b"\r", "running")
            key(b"f", "recorded: failure")
            out.wait_for("press Enter to start")
            key(b"\r", "running")
            key(b"a", "recorded: aborted")  # episode 2
            out.wait_for("press Enter to start")
            key(b"\r", "running")
            key(b" ", "E-STOP tripped")  # episode 3: the server's e-stop trips
            out.wait_for("Verdict?")
            # The client's estop message is fire-and-forget: the 20 Hz server reads it on its next
            # tick, which may come after tether eval has already asked for the verdict.
            wait_until(lambda: server.stats.estops > 0, 2.0, "the server to read the estop message")
            assert server.stats.estops == 1 and server._estop
            key(b"f", "recorded: failure")
            out.wait_for("press Enter to start")
            key(b"\r", "e-stop is latched")  # no start while it is latched
            key(b"c", "e-stop cleared")
            key(b"\r", "running")
            out.wait_for("Episode ended by the robot server")  # episode 4 runs to its limit
            key(b"s", "recorded: success")
            assert proc.wait(30) == 0, "".join(out.lines)[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
            os.close(master)
        assert not server._estop
    results = json.loads((tmp_path / "op" / "eval.json").read_text())
    assert [(e["seed"], e["status"]) for e in results["per_episode"]] == [
        (3, "success"), (4, "failure"), (5, "aborted"), (6, "failure"), (7, "success")]
    assert results["per_episode"][4]["length"] == 30
    assert (results["successes"], results["episodes"]) == (2, 4)  # the abort is not counted
    assert results["operator"] == {"redos": 1, "aborted": 1, "quit_early": False}
    assert results["mode"] == "operator" and results["torch_imported"] is False


def write_run(folder, counts):
    """A synthetic eval.json: task -> (successes, episodes)."""
    folder.mkdir(parents=True)
    tasks = {t: {"success_rate": s / n, "successes": s, "episodes": n} for t, (s, n) in counts.items()}
    (folder / "eval.json").write_text(json.dumps({"tasks": tasks}))
    return str(folder)


def test_compare_says_which_differences_are_significant(tmp_path, capsys):
    base = write_run(tmp_path / "base", {"reach": (5, 20), "push": (10, 20)})
    better = write_run(tmp_path / "better", {"reach": (18, 20), "push": (11, 20)})
    similar = write_run(tmp_path / "similar", {"reach": (6, 20), "push": (9, 20)})
    cli.main(["eval", "compare", base, better, similar, "--out", str(tmp_path / "cmp")])
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    verdicts = {(c["run"], c["task"]): c for c in result["comparisons"]}
    from scipy.stats import fisher_exact

    assert verdicts["better", "reach"]["p_value"] == pytest.approx(
        fisher_exact([[18, 2], [5, 15]]).pvalue)
    assert verdicts["better", "reach"]["significant"] and verdicts["better", "overall"]["significant"]
    assert verdicts["better", "reach"]["verdict"].startswith("better is significantly better than base")
    assert not verdicts["better", "push"]["significant"]
    assert not any(verdicts["similar", t]["significant"] for t in ("reach", "push", "overall"))
    assert verdicts["similar", "overall"]["verdict"].startswith("no significant difference")
    assert result["table"]["overall"]["better"]["successes"] == 29
    printed = capsys.readouterr().out
    assert "better is significantly better than base" in printed and "Fisher exact test" in printed
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0
    assert "| reach |" in (tmp_path / "cmp" / "compare.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["compare", "A"], "compare needs two or more runs"),
    (["p.onnx", "q.onnx"], "one policy at a time"),
    (["p.onnx", "--sim", "pointmass", "--robot", "tcp://127.0.0.1:5"], "--sim evaluates without"),
    (["p.onnx", "--num-envs", "2"], "--num-envs needs --sim"),
    (["p.onnx", "--episodes", "0"], "--episodes must be >= 1"),
    (["missing.onnx", "--sim", "pointmass"], "policy file missing.onnx does not exist"),
])
def test_bad_input_is_a_one_line_error(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["eval", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_videos_of_successes_and_failures(tmp_path):
    """Direct MetaWorld: up to K MP4s per task, named by outcome, replayed frame-exactly."""
    weights = np.zeros((39, 4))
    for i in range(3):  # hand -> goal, proportional (1.0 = 1 cm per tick)
        weights[i, i], weights[36 + i, i] = -30.0, 30.0
    policy = linear_policy(tmp_path / "mw.onnx", metaworld_spec(("reach-v3",)), weights, 0.1)
    results = evaluate_sim(EvalCommand(policy, sim="metaworld", episodes=4, seed=1000,
                                       max_episode_steps=30, videos_per_task=2, out=tmp_path / "mw"))
    eps = results["per_episode"]
    filmed = [e for e in eps if e["video"]]
    assert sorted(e["success"] for e in filmed) == [False, True]
    assert not results["warnings"]
    for e in filmed:
        name = Path(e["video"]).name
        assert name == f"reach-v3_ep{e['index']:03d}_seed{e['seed']}_" + (
            "success.mp4" if e["success"] else "failure.mp4")
        frames = read_mp4(e["video"])
        assert frames.shape == (e["length"] + 1, 128, 128, 3)  # the first observation + one per tick
    assert results["videos"]["reach-v3"] == [e["video"] for e in filmed]


def test_video_choice_keeps_both_outcomes():
    eps = [{"index": i, "success": s} for i, s in enumerate([True, True, True, False, True])]
    assert [e["index"] for e in choose_videos(eps, 2)] == [0, 3]
    assert [e["index"] for e in choose_videos(eps, 3)] == [0, 1, 3]
    assert [e["index"] for e in choose_videos(eps, 10)] == [0, 1, 2, 3, 4]
    quota = VideoQuota(2)  # robot mode decides as episodes end
    assert [quota.keep("t", e["success"]) for e in eps] == [True, False, False, True, False]
    assert not quota.want("t")


def test_image_policy_gets_its_camera_in_direct_sim(tmp_path):
    """A policy that reads a camera is evaluated with that camera rendered at its size, and the
    videos come from the same camera at the same size."""
    import torch

    from tether.policies.configs import IqlConfig
    from tether.policies.data import Normalizer
    from tether.policies.export import export_policy
    from tether.policies.iql import Iql

    spec = metaworld_spec(("reach-v3",), cameras=("corner",), image_size=32)
    torch.manual_seed(0)
    model = Iql(IqlConfig(hidden=(8,), encoder="image", channels=(4,), state_dims=(0, 1, 2, 3)), 39, 4, 1,
                "observation.images.corner", (32, 32, 3))
    norm = Normalizer(np.zeros(39), np.ones(39), np.zeros(4), np.ones(4))
    policy = export_policy(model.actor, norm, spec, ["reach-v3"], tmp_path / "img.onnx")
    results = evaluate_sim(EvalCommand(policy, sim="metaworld", episodes=2, seed=1000, max_episode_steps=5,
                                       videos_per_task=1, out=tmp_path / "img"))
    assert [e["length"] for e in results["per_episode"]] == [5, 5]
    filmed = [e for e in results["per_episode"] if e["video"]]
    assert read_mp4(filmed[0]["video"]).shape == (6, 32, 32, 3)
