"""Bad policies get one line, and broken actions get the right diagnosis (issue 26).

A file that is not a tether ONNX policy (random bytes, empty, bad ``tether.policy`` metadata, a
graph whose inputs do not fit its metadata) is refused at load with ``tether: error: ...``. A
policy that loads but emits NaN, inf, out-of-range or wrong-size actions is held on every tick by
the safety layer, and ``eval.json``/``eval.md`` say which check refused them (the server's own
reasons: ``non_finite``, ``out_of_limits``, ``bad_shape``) instead of blaming a loaded machine.

The policies are small ONNX graphs written with tether's ``save_onnx`` (its metadata and checks),
as in ``test_eval.py``; corrupted ones are such files damaged afterwards.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tether.launch.eval import EvalCommand, evaluate_robot
from tether.launch.eval_sim import evaluate_sim
from tether.policies.export import save_onnx
from tether.robot.drivers.pointmass import PointMassRobot, pointmass_spec
from tether.robot.runner import PolicyLoadError, PolicyRunner

SPEC = pointmass_spec(10.0)  # state (4,), action (2,) in [-1, 1], task reach-origin


def graph_policy(path, spec, nodes, inits, inputs, outputs, meta_extra=None, state_dim=None):
    """Write a tether ONNX policy: ``obs`` [B, 1, S] (S: ``state_dim``, default the spec's state
    size) and ``goal`` [B, tasks] inputs plus ``inputs`` (extra value infos), outputs
    ``outputs``, task one-hot goal, window 1."""
    s = state_dim or spec.observation["observation.state"].shape[0]
    graph = helper.make_graph(
        nodes, "policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["B", 1, s]),
         helper.make_tensor_value_info("goal", TensorProto.FLOAT, ["B", len(spec.tasks)]), *inputs],
        outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    meta = {"kind": "mlp", "window": 1, "goal": {"kind": "task_one_hot", "tasks": list(spec.tasks)},
            **(meta_extra or {})}
    return save_onnx(model, {"tether.spec": spec.to_json(), "tether.policy": json.dumps(meta)}, path)


def constant_policy(path, spec, action, state_dim=None):
    """action = obs @ 0 + ``action`` (a constant, NaN and inf allowed); ``state_dim`` other than
    the spec's makes a graph whose input does not fit its metadata."""
    s = state_dim or spec.observation["observation.state"].shape[0]
    a = len(action)
    nodes = [helper.make_node("Squeeze", ["obs", "axis1"], ["o"]),
             helper.make_node("MatMul", ["o", "W"], ["ow"]),
             helper.make_node("Add", ["ow", "b"], ["action"])]
    inits = [numpy_helper.from_array(np.zeros((s, a), np.float32), "W"),
             numpy_helper.from_array(np.asarray(action, np.float32), "b"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    return graph_policy(path, spec, nodes, inits, [],
                        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["B", a])],
                        state_dim=s)


def wide_policy(path, spec, width):
    """Zeros of size ``width`` (its noise_length), found only at run time: the output's declared
    size is dynamic, so the runner cannot refuse it at load."""
    nodes = [helper.make_node("ReduceSum", ["noise", "axes"], ["r"], keepdims=0),
             helper.make_node("Mul", ["r", "zero"], ["action"])]
    inits = [numpy_helper.from_array(np.array([2], np.int64), "axes"),
             numpy_helper.from_array(np.float32(0).reshape(()), "zero")]
    return graph_policy(path, spec, nodes, inits,
                        [helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["B", "L", "A"])],
                        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["B", "W"])],
                        {"noise_length": width})


def with_metadata(source, path, **changes):
    """A copy of the policy ``source`` with metadata entries replaced (a value of None removes it)."""
    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in changes.items():
        key = key.replace("_", ".")
        if value is None:
            props.pop(key)
        else:
            props[key] = value
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def policy_meta(**changes) -> str:
    meta = {"kind": "mlp", "window": 1, "goal": {"kind": "task_one_hot", "tasks": ["reach-origin"]}}
    meta.update(changes)
    return json.dumps(meta)


@pytest.fixture
def good(tmp_path):
    return constant_policy(tmp_path / "good.onnx", SPEC, [0.1, -0.1])


# --------------------------------------------------------------------------- refused at load
def test_not_an_onnx_file_is_a_one_line_error(tmp_path, good, cli_error, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "random.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "empty.onnx").write_bytes(b"")
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for name, message in (("random.onnx", "random.onnx is not an ONNX model onnxruntime can load"),
                          ("empty.onnx", "empty.onnx is empty, not an ONNX model"),
                          ("cut.onnx", "cut.onnx is not an ONNX model onnxruntime can load")):
        err = cli_error("eval", name, "--sim", "pointmass", "--episodes", "1")
        assert message in err and "export" in err, err


@pytest.mark.parametrize("changes, message", [
    ({"tether_policy": policy_meta(window="abc")}, "window is 'abc', not a positive integer"),
    ({"tether_policy": policy_meta(window=0)}, "window is 0, not a positive integer"),
    ({"tether_policy": policy_meta(window=[1])}, "window is [1], not a positive integer"),
    ({"tether_policy": policy_meta(goal="reach-origin")}, "goal is 'reach-origin', not an object"),
    ({"tether_policy": policy_meta(goal={"tasks": "reach-origin"})}, "goal.tasks is 'reach-origin', not a list"),
    ({"tether_policy": policy_meta(goal={"kind": "observation", "key": "observation.goal", "tasks": []})},
     "goal.key is 'observation.goal', not an observation"),
    ({"tether_policy": policy_meta(goal={"kind": "teleport", "tasks": ["reach-origin"]})}, "goal.kind is 'teleport'"),
    ({"tether_policy": policy_meta(action_horizon=-2)}, "action_horizon is -2"),
    ({"tether_policy": "[1, 2"}, "bad metadata"),
    ({"tether_policy": None}, "its metadata lacks 'tether.policy'"),
    ({"tether_spec": "{}"}, "bad metadata"),
])
def test_bad_metadata_is_a_one_line_error(tmp_path, good, cli_error, changes, message):
    path = with_metadata(good, tmp_path / "bad.onnx", **changes)
    with pytest.raises(PolicyLoadError, match="is not a tether policy"):
        PolicyRunner(path)
    err = cli_error("eval", path, "--sim", "pointmass", "--episodes", "1", "--out", tmp_path / "ev")
    assert message in err, err


def test_graph_inputs_that_do_not_fit_the_metadata_are_refused(tmp_path, cli_error):
    path = constant_policy(tmp_path / "five.onnx", SPEC, [0.0, 0.0], state_dim=5)
    err = cli_error("eval", path, "--sim", "pointmass", "--episodes", "1", "--out", tmp_path / "ev")
    assert "input 'obs'" in err and "[?, 1, 5]" in err.replace("'", "") and "['B', 1, 4]" in err, err
    # window 3 in the metadata, a graph made for window 1
    path = with_metadata(constant_policy(tmp_path / "w.onnx", SPEC, [0.0, 0.0]), tmp_path / "w3.onnx",
                         tether_policy=policy_meta(window=3))
    assert "['B', 3, 4]" in cli_error("eval", path, "--sim", "pointmass", "--episodes", "1",
                                      "--out", tmp_path / "ev")
    # an output statically of the wrong size
    path = constant_policy(tmp_path / "three.onnx", SPEC, [0.0, 0.0, 0.0])
    assert "output 'action'" in cli_error("eval", path, "--sim", "pointmass", "--episodes", "1",
                                          "--out", tmp_path / "ev")


# ------------------------------------------------------------------- refused actions diagnosed
BROKEN = {
    "nan": (lambda p: constant_policy(p, SPEC, [float("nan"), 0.0]), "non_finite"),
    "inf": (lambda p: constant_policy(p, SPEC, [0.0, float("-inf")]), "non_finite"),
    "out_of_range": (lambda p: constant_policy(p, SPEC, [3.0, 0.0]), "out_of_limits"),
    "wrong_size": (lambda p: wide_policy(p, SPEC, 3), "bad_shape"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_sim_eval_names_the_check_that_refused_the_actions(tmp_path, capsys, name):
    make, reason = BROKEN[name]
    out = tmp_path / "ev"
    results = evaluate_sim(EvalCommand(make(tmp_path / f"{name}.onnx"), sim="pointmass", episodes=2,
                                       max_episode_steps=5, out=out))
    assert results["safety_refusals"] == {reason: 10}
    assert all(e["held_ticks"] == e["held_refused"] == 5 for e in results["per_episode"])
    (warning,) = results["warnings"]
    assert f"refused 10 of 10 policy outputs ({reason} 10:" in warning
    assert "loaded machine" not in warning and "not the machine or the link" in warning
    assert json.loads((out / "eval.json").read_text())["safety_refusals"] == {reason: 10}
    assert f"Warning: the robot's safety layer refused 10 of 10 policy outputs ({reason} 10" in (
        out / "eval.md").read_text()


def test_sim_eval_prints_the_warning(tmp_path, capsys):
    from tether.launch.cli import main

    path = BROKEN["nan"][0](tmp_path / "nan.onnx")
    main(["eval", str(path), "--sim", "pointmass", "--episodes", "1", "--max-episode-steps", "4",
          "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert "tether: warning: the robot's safety layer refused 4 of 4 policy outputs (non_finite 4: NaN or inf" in err


def test_a_good_policy_gets_no_warning(tmp_path, good):
    results = evaluate_sim(EvalCommand(good, sim="pointmass", episodes=1, max_episode_steps=5,
                                       out=tmp_path / "ev"))
    assert results["safety_refusals"] == {} and results["warnings"] == []


@pytest.mark.parametrize("name", ["nan", "out_of_range", "wrong_size"])
def test_robot_eval_reasons_match_the_servers_counts(tmp_path, serve, name):
    """On a robot server the eval names the same check, as often as the server itself counted it
    (``stats.clipped``), and does not blame the machine: the server, lock-stepped, never holds
    for lateness here."""
    make, reason = BROKEN[name]
    policy = make(tmp_path / f"{name}.onnx")
    with serve(PointMassRobot(rate_hz=10.0, max_episode_steps=6), lockstep=True) as server:
        results = evaluate_robot(EvalCommand(policy, robot=server.address, episodes=2,
                                             videos_per_task=0, out=tmp_path / "ev"))
        counted = dict(server.stats.clipped)
    assert results["safety_refusals"] == {reason: counted[reason]} and counted[reason] >= 10
    assert server.stats.rejected["invalid_action"] == counted[reason]
    held = sum(e["held_ticks"] for e in results["per_episode"])
    assert held == sum(e["held_refused"] for e in results["per_episode"]) == 12
    (warning,) = results["warnings"]
    assert f"({reason} {counted[reason]}:" in warning and "loaded machine" not in warning


def test_a_damaged_checkpoint_is_a_one_line_error(tmp_path, cli_error):
    path = tmp_path / "policy.pt"
    path.write_bytes(np.random.default_rng(2).bytes(4096))
    err = cli_error("eval", path, "--sim", "pointmass", "--episodes", "1", "--out", tmp_path / "ev")
    assert f"{path} is not a checkpoint torch can load" in err
    assert "no checkpoint at" in cli_error("export", tmp_path / "nope" / "policy.pt")


def test_a_missing_file_says_who_needs_it(tmp_path):
    """The operating system's bare "[Errno 2] No such file or directory: 'PATH'" gets the verb
    that needed the file."""
    from tether.launch.cli import _one_line

    with pytest.raises(FileNotFoundError) as error:
        open(tmp_path / "arm.json")
    assert _one_line(error.value, "serve") == (
        f"{tmp_path / 'arm.json'} does not exist (No such file or directory): tether serve needs it; "
        "check the path")
    assert _one_line(FileNotFoundError("no launch file x.yaml"), "launch") == "no launch file x.yaml"
