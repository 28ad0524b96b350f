"""`tether eval` against `tether serve --robot franka` driving franky-sim (libfranka's network
protocol, its own process): an episode of a hand-written ONNX policy (onnx helper ops, no torch)
runs to its end, and the joint it pushes past its limit is refused by tether's safety layer
before it reaches franky (franky-sim records every joint command it receives)."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tether.launch import processes
from tether.robot.drivers.franka import FrankaConfig

pytestmark = pytest.mark.realtime  # see tests/conftest.py: runs alone under pytest-xdist

pytest.importorskip("franky", reason="install tether[franka]")
pytest.importorskip("franky_sim", reason="install tether[franka-sim]")

STEPS = 150  # 1.5 s at 100 Hz: franky-sim runs slower than real time on a loaded machine, the limit is 0.06 rad away
PUSH = 0.02  # rad per tick on joint_1: past its narrowed limit once the arm is within 0.02 rad of it


def pushing_policy(path: Path, spec) -> Path:
    """action = observation.state + [PUSH, 0, ..., 0]: joint_1 walks on until the limit refuses it."""
    step = np.zeros(7, np.float32)
    step[0] = PUSH
    nodes = [helper.make_node("Squeeze", ["obs", "axis1"], ["o"]),
             helper.make_node("Add", ["o", "step"], ["action"])]
    graph = helper.make_graph(
        nodes, "push_joint_1",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["B", 1, 7]),
         helper.make_tensor_value_info("goal", TensorProto.FLOAT, ["B", len(spec.tasks)])],  # fed, unused
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["B", 7])],
        [numpy_helper.from_array(step, "step"), numpy_helper.from_array(np.array([1], np.int64), "axis1")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    meta = {"kind": "mlp", "window": 1, "goal": {"kind": "task_one_hot", "tasks": list(spec.tasks)}, "parameters": 7}
    for key, value in {"tether.spec": spec.to_json(), "tether.policy": json.dumps(meta)}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    path.write_bytes(model.SerializeToString())
    return path


def test_an_eval_episode_runs_to_its_end_and_the_limit_holds(tmp_path):
    from tether.robot.drivers.emulators.franka import FrankaPeer

    with FrankaPeer() as peer:
        q0 = np.asarray(peer.state()["q"])
        limit = float(q0[0]) + 0.06
        settings = {"host": peer.hostname, "realtime": False, "home": None, "tasks": ["reach"],
                    "max_episode_steps": STEPS, "relative_dynamics_factor": 0.5,
                    "low": [-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159],
                    "high": [limit, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159]}
        config = tmp_path / "franka.json"
        config.write_text(json.dumps(settings))
        policy = pushing_policy(tmp_path / "push.onnx", FrankaConfig(**settings).spec())
        address = processes.free_tcp_address()
        server = processes.start(["serve", "--robot", "franka", "--robot-config", str(config), "--address", address],
                                 tmp_path / "serve.log")
        try:
            processes.wait_for_server(address, server)
            run = subprocess.run(processes.tether_command("eval", str(policy), "--robot", address, "--episodes", "1",
                                                          "--out", str(tmp_path / "eval")),
                                 capture_output=True, text=True, timeout=120)
        finally:
            processes.stop(server)
        record = peer.state()
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:] + (tmp_path / "serve.log").read_text()[-2000:]
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    episode = result["per_episode"][0]
    assert episode["length"] == STEPS and result["torch_imported"] is False  # ran to its step limit
    assert sum(result["safety_refusals"].values()) >= 1, result["safety_refusals"]  # the limit refused it
    # No target past the limit reached franky; franky's jerk-limited motion toward the last target
    # brakes from the speed it had, so its 1 kHz commands may pass that target by its braking
    # distance (up to 0.0067 rad measured on a loaded machine), never by a refused target's step.
    assert record["q_c_max"][0] <= limit + 0.5 * PUSH
    assert record["q"][0] > q0[0] + 0.03  # the commands within it did move the arm
