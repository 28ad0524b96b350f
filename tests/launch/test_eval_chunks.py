"""`tether eval --action-steps K`: a chunk policy's first K actions run per policy call, in direct
simulation and over a real-time robot server (``send_chunk``), and the runner's observation
history still sees every tick in between; `--chunk-blend ensemble` (ACT's temporal ensembling)
averages the overlapping chunks in direct simulation.

The policy is an ONNX graph written by hand (no torch): ``action = flatten(obs window) @ W`` and
``actions[k] = action + k * d``, so which chunk entry ran on a tick is visible in the outcome.
"""

import json
import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tether.launch import UsageError
from tether.launch.eval import EvalCommand, LinkStats, check_command, run_episode
from tether.launch.eval_sim import DriverEnv, evaluate_sim, run_sim_episode
from tether.policies.export import save_onnx
from tether.robot.client import RobotClient
from tether.robot.drivers.pointmass import PointMassRobot, pointmass_spec
from tether.robot.runner import PolicyRunner
from tether.robot.spec import SpecError

pytestmark = pytest.mark.realtime  # see tests/conftest.py: runs alone under pytest-xdist


def chunk_policy(path, spec, weights, horizon, step):
    """A tether ONNX chunk policy: ``weights`` [T*S, A] over the flattened window of T states,
    ``actions`` [B, H, A] = action + k * ``step`` for k = 0..H-1, both clipped to [-1, 1] (the
    server refuses commands outside the spec's limits)."""
    ts, a = weights.shape
    s = spec.observation["observation.state"].shape[0]
    window = ts // s
    offsets = (np.arange(horizon, dtype=np.float32)[:, None] * np.asarray(step, np.float32))[None]
    inits = [numpy_helper.from_array(np.asarray(weights, np.float32), "W"),
             numpy_helper.from_array(np.array([-1, ts], np.int64), "flat"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(offsets, "offsets"),
             numpy_helper.from_array(np.float32(-1), "lo"), numpy_helper.from_array(np.float32(1), "hi")]
    nodes = [helper.make_node("Reshape", ["obs", "flat"], ["o"]),
             helper.make_node("MatMul", ["o", "W"], ["raw"]),
             helper.make_node("Clip", ["raw", "lo", "hi"], ["action"]),
             helper.make_node("Unsqueeze", ["raw", "axis1"], ["r1"]),
             helper.make_node("Add", ["r1", "offsets"], ["raws"]),
             helper.make_node("Clip", ["raws", "lo", "hi"], ["actions"])]
    graph = helper.make_graph(
        nodes, "chunk",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["B", window, s]),
         helper.make_tensor_value_info("goal", TensorProto.FLOAT, ["B", len(spec.tasks)])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["B", a]),
         helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["B", horizon, a])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    meta = {"kind": "beso", "window": window, "action_horizon": horizon,
            "goal": {"kind": "task_one_hot", "tasks": list(spec.tasks)}, "parameters": int(weights.size)}
    return save_onnx(model, {"tether.spec": spec.to_json(), "tether.policy": json.dumps(meta)}, path)


def p_controller(path, rate_hz=10.0, horizon=4, step=(0.3, -0.3)):
    """P-control of the point mass towards the origin (window 1), plus k * step."""
    weights = np.zeros((4, 2))
    weights[0, 0] = weights[1, 1] = -2.0
    return chunk_policy(path, pointmass_spec(rate_hz), weights, horizon, step)


def test_observe_fills_the_window_between_chunks(tmp_path):
    spec = pointmass_spec(10.0)
    weights = np.arange(16, dtype=np.float64).reshape(8, 2) / 100  # both frames of the window count
    runner = PolicyRunner(chunk_policy(tmp_path / "w2.onnx", spec, weights, 3, (1.0, 0.0)))
    task = spec.tasks[0]
    obs = [{"observation.state": np.full(4, i - 1.0, np.float32)} for i in range(3)]
    runner.reset(task)
    runner.act(obs[0])
    runner.observe(obs[1])
    chunk = runner.act_chunk(obs[2])
    expected = np.concatenate([obs[1]["observation.state"], obs[2]["observation.state"]]) @ weights
    assert chunk.shape == (3, 2)
    np.testing.assert_allclose(chunk[:, 0], np.clip(expected[0] + np.arange(3), -1, 1), rtol=1e-6)
    np.testing.assert_allclose(chunk[:, 1], np.clip(expected[1], -1, 1), rtol=1e-6)
    with pytest.raises(SpecError, match="observation.state"):
        runner.observe({"observation.state": np.full(4, np.nan, np.float32)})


def test_direct_sim_runs_k_actions_per_policy_call(tmp_path):
    policy = p_controller(tmp_path / "chunk.onnx")
    runs = {}
    for k in (1, 3, 4):
        runs[k] = evaluate_sim(EvalCommand(policy, sim="pointmass", episodes=4, seed=3, action_steps=k,
                                           max_episode_steps=12, out=tmp_path / f"k{k}"))
        calls = sum(math.ceil(e["length"] / k) for e in runs[k]["per_episode"])
        assert len(runs[k]["latency_ms"]["samples"]) == calls, k
        assert runs[k]["config"]["action_steps"] == k
    # The chunk's later entries differ from a re-planned first entry: the episodes differ.
    returns = {k: [e["return"] for e in r["per_episode"]] for k, r in runs.items()}
    assert returns[1] != returns[3] != returns[4]


def test_robot_server_runs_sent_chunks(tmp_path, serve):
    """Real time at 20 Hz: the policy is asked about every third state and the server fills the
    ticks in between from the chunk. Chunks of 6 with 3 run per call: a re-plan may come up to
    three periods (150 ms) late on a loaded machine before the chunk runs out and the robot holds."""
    policy = p_controller(tmp_path / "chunk.onnx", rate_hz=20.0, horizon=6)
    runner = PolicyRunner(policy)
    with serve(PointMassRobot(20.0, 30), rate_hz=20.0) as server, \
            RobotClient(server.address, spec=runner.spec) as client:
        r = run_episode(client, runner, runner.tasks[0], 0, None, LinkStats(), action_steps=3)
    assert r["length"] == 30 or r["success"]
    assert len(r["latencies"]) <= math.ceil(r["length"] / 3) + 1
    # The server ran the chunk on the ticks the policy did not answer: without it, two ticks in
    # three would be held (a loaded machine may still hold a few).
    assert r["held_ticks"] <= 3


def test_action_steps_outside_the_chunk_is_a_usage_error(tmp_path):
    chunked = p_controller(tmp_path / "chunk.onnx", horizon=4)
    single = p_controller(tmp_path / "single.onnx", horizon=1)
    with pytest.raises(UsageError, match="chunks of 4 action"):
        evaluate_sim(EvalCommand(chunked, sim="pointmass", episodes=1, action_steps=5, out=tmp_path / "a"))
    with pytest.raises(UsageError, match="chunks of 1 action"):
        evaluate_sim(EvalCommand(single, sim="pointmass", episodes=1, action_steps=2, out=tmp_path / "b"))


class RecordingPointMass(PointMassRobot):
    """The point mass, keeping every action it applies."""

    def __init__(self, *args):
        super().__init__(*args)
        self.applied = []

    def act(self, action):
        self.applied.append(np.array(action))
        super().act(action)


@pytest.mark.parametrize("blend,k,m", [("latest", 1, 0.0), ("latest", 2, 0.0), ("ensemble", 1, math.log(3)),
                                       ("ensemble", 2, 0.5)])
def test_direct_sim_blends_overlapping_chunks(tmp_path, blend, k, m):
    """A policy whose chunk is (0, d, 2d, 3d) whatever it sees: the tick at t runs the entry t - s
    of the chunks planned at ticks s (every K-th, the last 4), the newest alone (latest) or
    averaged with weights exp(-m i), i = 0 the oldest (ensemble)."""
    d = np.array([0.1, -0.1])
    runner = PolicyRunner(chunk_policy(tmp_path / "c.onnx", pointmass_spec(10.0), np.zeros((4, 2)), 4, d))
    env = DriverEnv(RecordingPointMass(10.0, 9))
    r = run_sim_episode(env, runner, runner.tasks[0], 0, None, action_steps=k, chunk_blend=blend,
                        chunk_ensemble_m=m)
    assert r["length"] == 9 and len(r["latencies"]) == math.ceil(9 / k)
    assert len(env.robot.applied) == 9  # every tick acted (none held), so every tick is checked
    for t, applied in enumerate(env.robot.applied):
        planned = [s for s in range(0, t + 1, k) if t - s < 4]
        if blend == "latest":
            planned = planned[-1:]
        w = np.exp(-m * np.arange(len(planned)))
        expected = sum(wi * (t - s) for wi, s in zip(w, planned)) / w.sum() * d
        np.testing.assert_allclose(applied, expected, atol=1e-6, err_msg=f"tick {t}")


def test_chunk_blend_is_for_direct_simulation(tmp_path):
    with pytest.raises(UsageError, match="tether serve --chunk-blend ensemble"):
        check_command(EvalCommand(tmp_path / "p.onnx", chunk_blend="ensemble"))
    with pytest.raises(UsageError, match="--chunk-ensemble-m must be >= 0"):
        check_command(EvalCommand(tmp_path / "p.onnx", sim="pointmass", chunk_blend="ensemble",
                                  chunk_ensemble_m=-1.0))
