"""``tether bench policy``: milliseconds per action of a policy, onnxruntime against torch eager.

Both run in this process at batch 1 on one thread (as the robot's runner does), on the same
observations, alternating in rounds so that a busy machine slows both alike. The policy is a
``policy.pt`` from ``tether train`` (BESO or GCBC), exported to ONNX for the measurement, or a
preset of random weights: ``beso`` / ``gcbc`` sized like the OGBench benchmark's policies (state
40, action 5, goal 40), ``beso-image`` / ``gcbc-image`` like the visuomotor demo's (two 128 x 128
cameras through the demo's image encoder, 8 proprioceptive dims, action 4, 3 tasks).
Reported per backend: p50/p90/p99 ms per action, and the speed-up of onnxruntime.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tether.launch import UsageError


@dataclass
class PolicyBench:
    """Benchmark a policy's inference: ms per action, onnxruntime vs torch eager."""

    policy: str = "beso"
    """A policy.pt, or a preset with random weights: beso, gcbc, beso-image or gcbc-image."""
    steps: int | None = None
    """Override the sampler's denoising steps (BESO)."""
    actions: int = 300
    """Actions timed per backend."""
    json: bool = False
    """Print the result as JSON only."""


def _load(cmd: PolicyBench):
    """(TrainedPolicy, description) for ``cmd.policy``."""
    import dataclasses

    from tether.policies.checkpoint import KINDS, TrainedPolicy, load_policy
    from tether.policies.configs import BesoConfig
    from tether.policies.data import Normalizer
    from tether.robot.spec import Feature, RobotSpec

    if cmd.policy in IMAGE_PRESETS:
        return _image_preset(cmd), f"{cmd.policy} preset"
    if cmd.policy in KINDS:
        s, a = 40, 5
        spec = RobotSpec("bench", 20.0, {"observation.state": Feature("float32", (s,))},
                         Feature("float32", (a,), low=(-1.0,) * a, high=(1.0,) * a), tasks=("play",))
        cfg = BesoConfig(window=2, action_horizon=1)
        if cmd.steps is not None:
            cfg = dataclasses.replace(cfg, num_steps=cmd.steps)
        identity = Normalizer(np.zeros(s, np.float32), np.ones(s, np.float32),
                              np.zeros(a, np.float32), np.ones(a, np.float32))
        model = KINDS[cmd.policy](cfg, s, a, s).eval()
        return TrainedPolicy(model, identity, ["play"], spec, tuple(range(s))), f"{cmd.policy} preset"
    path = Path(cmd.policy)
    if not path.exists():
        raise UsageError(f"--policy is a policy.pt or one of {sorted(KINDS) + sorted(IMAGE_PRESETS)}, "
                         f"not {cmd.policy!r}")
    policy = load_policy(path)
    if cmd.steps is not None:
        policy.model.cfg = dataclasses.replace(policy.model.cfg, num_steps=cmd.steps)
    return policy, str(path)


IMAGE_PRESETS = {"beso-image": "beso", "gcbc-image": "gcbc"}


def _image_preset(cmd: PolicyBench):
    """A visuomotor policy of random weights with the demo's inputs, on two cameras."""
    import dataclasses

    from tether.launch.demo import IMAGE_OBS
    from tether.policies.checkpoint import TrainedPolicy
    from tether.policies.configs import BesoConfig
    from tether.policies.data import Normalizer
    from tether.policies.visuomotor import VisuomotorPolicy
    from tether.robot.spec import Feature, RobotSpec

    s, a, tasks, hw = 39, 4, ["reach", "push", "pick"], (128, 128, 3)
    cams = ("observation.images.corner", "observation.images.wrist")
    spec = RobotSpec("bench", 80.0, {"observation.state": Feature("float32", (s,)),
                                     **{c: Feature("uint8", hw, unit="pixel") for c in cams}},
                     Feature("float32", (a,), low=(-1.0,) * a, high=(1.0,) * a), tasks=tuple(tasks))
    cfg = BesoConfig(window=1)
    if cmd.steps is not None:
        cfg = dataclasses.replace(cfg, num_steps=cmd.steps)
    obs = dataclasses.replace(IMAGE_OBS, cameras=cams)
    identity = Normalizer(np.zeros(s, np.float32), np.ones(s, np.float32),
                          np.zeros(a, np.float32), np.ones(a, np.float32))
    model = VisuomotorPolicy(IMAGE_PRESETS[cmd.policy], cfg, obs, s, a, len(tasks), {c: hw for c in cams}).eval()
    return TrainedPolicy(model, identity, tasks, spec)


def _ms(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1e3
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "n": int(a.size)}


def bench_policy(cmd: PolicyBench) -> dict:
    """Run the benchmark (module docstring) and return its result dict."""
    import torch

    from tether.policies.export import _graph_class, export_policy
    from tether.robot.runner import PolicyRunner

    torch.set_num_threads(1)
    policy, what = _load(cmd)
    model = policy.model.eval()
    graph = _graph_class(model)(model, policy.normalizer, policy.spec, policy.goal_dims).eval()
    s = policy.normalizer.obs_mean.shape[0]
    rng = np.random.default_rng(0)
    obs = [rng.normal(size=s).astype(np.float32) for _ in range(cmd.actions)]
    cameras = list(getattr(model, "image_keys", ()))
    frames = {k: rng.integers(0, 256, policy.spec.observation[k].shape, dtype=np.uint8) for k in cameras}
    goal = rng.normal(size=s if policy.goal_dims is not None else len(policy.tasks)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_policy(model, policy.normalizer, policy.spec, policy.tasks, Path(tmp) / "p.onnx",
                             goal_dims=policy.goal_dims)
        runner = PolicyRunner(path)
        runner.reset(policy.tasks[0])
        window = runner.window
        onnx_t, torch_t = [], []
        torch_goal = torch.from_numpy(goal)[None]
        if policy.goal_dims is None:
            torch_goal = torch.eye(len(policy.tasks))[:1]
        for o in obs:
            observation = {"observation.state": o, **frames}
            if policy.goal_dims is not None:
                observation["observation.goal"] = goal
            t0 = time.perf_counter()
            runner.act(observation)
            onnx_t.append(time.perf_counter() - t0)
            x = torch.from_numpy(o).view(1, 1, s).expand(1, window, s)
            inputs = [x, torch_goal]
            if runner.noise_shape is not None:
                inputs.append(torch.randn(runner.noise_shape))
            # a visuomotor graph's frame windows [1, T, H, W, 3], one per camera
            inputs += [torch.from_numpy(frames[k]).view(1, 1, *frames[k].shape).expand(1, window, *frames[k].shape)
                       for k in cameras]
            t0 = time.perf_counter()
            with torch.no_grad():
                graph(*inputs)
            torch_t.append(time.perf_counter() - t0)
    meta = runner.meta
    result = {
        "policy": what,
        "kind": meta["kind"],
        "parameters": meta["parameters"],
        "num_steps": meta.get("num_steps"),
        "window": window,
        "cameras": {k: list(v.shape) for k, v in frames.items()},
        "onnxruntime_ms": _ms(onnx_t),
        "torch_eager_ms": _ms(torch_t),
    }
    result["speedup_p50"] = result["torch_eager_ms"]["p50"] / result["onnxruntime_ms"]["p50"]
    result["checks"] = {
        "onnxruntime_2x_faster": result["speedup_p50"] >= 2.0,
        "le_5ms_per_action": result["onnxruntime_ms"]["p50"] <= 5.0,
        **({"le_10ms_per_action_with_cameras": result["onnxruntime_ms"]["p50"] <= 10.0} if cameras else {}),
    }
    return result


def print_result(r: dict) -> None:
    """One line for people."""
    print(f"{r['policy']} ({r['kind']}, {r['parameters']} parameters, {r['num_steps']} steps): "
          f"onnxruntime p50 {r['onnxruntime_ms']['p50']:.2f} ms p99 {r['onnxruntime_ms']['p99']:.2f} ms; "
          f"torch eager p50 {r['torch_eager_ms']['p50']:.2f} ms; speed-up {r['speedup_p50']:.1f}x; "
          f"{r['checks']}")
