"""``tether bench loop|record|policy|sim|finetune|fuzz``: benchmarks of the deployment path, of the
vectorized simulation and of online fine-tuning, each with its baselines, and the link's fuzzer.

``record`` is in ``bench_record.py``, ``policy`` in ``bench_policy.py``, ``sim`` in ``bench_sim.py``,
``finetune`` in ``bench_finetune.py``, ``fuzz`` in ``bench_fuzz.py``. ``loop`` measures the timing of the robot link with a policy
in the loop, and its baselines.

A point-mass robot server runs in its own process at ``--rate``; this process plays the policy
client. Three phases run against the same server, one after the other:

* transport: the client answers every state with a constant action (no policy): the bare round
  trip, state published -> command received by the server;
* onnxruntime: the policy through ``PolicyRunner`` (what runs on a robot);
* torch eager: the same weights in torch (one thread, like the runner), for comparison.

The server stamps each applied command with the time from publishing the state it answers to
receiving it (``timing.command_latency_s``): that is the policy step. The cycle period is the
server's own tick-to-tick time. Policies carry random weights: only their cost matters here.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Literal, Union

import numpy as np
import tyro

from tether.launch import processes
from tether.launch.bench_finetune import FinetuneBench, bench_finetune
from tether.launch.bench_fuzz import FuzzBench, bench_fuzz
from tether.launch.bench_fuzz import print_result as print_fuzz
from tether.launch.bench_finetune import print_result as print_finetune
from tether.launch.bench_policy import PolicyBench, bench_policy
from tether.launch.bench_policy import print_result as print_policy
from tether.launch.bench_record import RecordBench, bench_record
from tether.launch.bench_record import print_result as print_record
from tether.launch.bench_sim import SimBench, bench_sim
from tether.launch.bench_sim import print_result as print_sim
from tether.robot.client import RobotClient


@dataclass
class LoopBench:
    """Benchmark the control loop: rate, jitter and policy step latency, with baselines."""

    rate: float = 500.0
    """Control rate of the server (Hz)."""
    duration: float = 60.0
    """Seconds of the onnxruntime phase."""
    baseline_duration: float = 10.0
    """Seconds of each baseline phase (transport, torch eager)."""
    policy: Literal["mlp", "beso"] = "mlp"
    """mlp: 2 x 256 MLP; beso: 3-step BESO (the demo's transformer)."""
    json: bool = False
    """Print the result as JSON only."""


def _us(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64) * 1e6
    if a.size == 0:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "n": 0}
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max()), "n": int(a.size)}


def run_phase(client: RobotClient, act: Callable[[dict], np.ndarray], seconds: float) -> dict:
    """Answer states with ``act`` for ``seconds``; returns timing statistics of the phase."""
    periods, latencies, inference = [], [], []
    first_seq = last_seq = None
    end = time.perf_counter() + seconds
    state = client.latest_state()
    while time.perf_counter() < end:
        state = client.next_state()
        timing = state["timing"]
        periods.append(timing["period_s"])
        if timing["command_latency_s"] is not None:
            latencies.append(timing["command_latency_s"])
        first_seq = state["seq"] if first_seq is None else first_seq
        last_seq = state["seq"]
        if client.pending():
            continue  # act on the newest state only
        if state["done"]:
            client.reset("reach-origin", int(state["seq"]))
            continue
        t0 = time.perf_counter()
        action = act(state["observation"])
        inference.append(time.perf_counter() - t0)
        client.send_action(action, state["seq"])
    ticks = (last_seq or 0) - (first_seq or 0)
    period = _us(periods)
    return {
        "achieved_rate_hz": ticks / seconds,
        "cycle_period_us": period,
        "jitter_us": period["p99"] - period["p50"],
        "policy_step_us": _us(latencies),
        "inference_us": _us(inference),
    }


def bench_loop(cmd: LoopBench) -> dict:
    """Run the three phases and return the result dict (see module docstring)."""
    import torch

    from tether.policies.beso import Beso
    from tether.policies.configs import BesoConfig
    from tether.policies.data import Normalizer
    from tether.policies.export import BesoGraph, MlpGraph, export_policy
    from tether.policies.mlp import MlpPolicy
    from tether.robot.drivers.pointmass import TASK, pointmass_spec
    from tether.robot.runner import PolicyRunner

    torch.manual_seed(0)
    torch.set_num_threads(1)  # as the runner: one core for the policy
    spec = pointmass_spec(cmd.rate)
    model = MlpPolicy(4, 2, 1) if cmd.policy == "mlp" else Beso(BesoConfig(), 4, 2, 1)
    model.eval()
    identity = Normalizer(np.zeros(4, np.float32), np.ones(4, np.float32),
                          np.zeros(2, np.float32), np.ones(2, np.float32))
    graph = (MlpGraph if cmd.policy == "mlp" else BesoGraph)(model, identity, spec).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_policy(model, identity, spec, [TASK], Path(tmp) / "policy.onnx")
        runner = PolicyRunner(path)
        runner.reset(TASK)
        goal = torch.ones(1, 1)

        def torch_act(obs: dict) -> np.ndarray:
            x = torch.tensor(obs["observation.state"], dtype=torch.float32).view(1, 1, 4)
            with torch.no_grad():
                if cmd.policy == "mlp":
                    return graph(x, goal)[0].numpy()
                window = x.expand(1, model.cfg.window, 4)
                return graph(window, goal, torch.randn(1, model.cfg.window, 2))[0][0].numpy()

        zero = np.zeros(2, np.float32)
        address = processes.free_tcp_address()
        server = processes.start(
            ["serve", "--robot", "pointmass", "--address", address, "--rate-hz", str(cmd.rate),
             "--max-episode-steps", "100000000"],
            Path(tmp) / "serve.log",
        )
        try:
            processes.wait_for_server(address, server)
            with RobotClient(address, spec=spec, name="bench") as client:
                client.reset(TASK, 0)
                transport = run_phase(client, lambda obs: zero, cmd.baseline_duration)
                onnx_phase = run_phase(client, runner.act, cmd.duration)
                eager = run_phase(client, torch_act, cmd.baseline_duration)
        finally:
            processes.stop(server)
    bound = 2 * (transport["policy_step_us"]["p99"] + onnx_phase["inference_us"]["p99"])
    return {
        "rate_hz": cmd.rate,
        "duration_s": cmd.duration,
        "policy": cmd.policy,
        "parameters": sum(p.numel() for p in model.parameters()),
        **onnx_phase,
        "baselines": {"transport": transport, "torch_eager": eager},
        "checks": {
            "rate_within_1pct": onnx_phase["achieved_rate_hz"] >= 0.99 * cmd.rate,
            "jitter_p99_le_1ms": onnx_phase["jitter_us"] <= 1000.0,
            "policy_step_p99_le_2x_transport_plus_inference": onnx_phase["policy_step_us"]["p99"] <= bound,
        },
    }


@dataclass
class BenchCommand:
    """Benchmarks: the control loop (rate, jitter, policy latency), recording (dropped frames),
    a policy's inference (ms per action, onnxruntime vs torch), the vectorized sim (env
    steps/s vs SyncVectorEnv and raw MuJoCo), the actor's control rate while a learner trains, or
    the robot link under a fuzzer (server exits, rejections by reason, tick periods)."""

    bench: tyro.conf.OmitArgPrefixes[tyro.conf.OmitSubcommandPrefixes[Union[
        Annotated[LoopBench, tyro.conf.subcommand("loop")],
        Annotated[RecordBench, tyro.conf.subcommand("record")],
        Annotated[PolicyBench, tyro.conf.subcommand("policy")],
        Annotated[SimBench, tyro.conf.subcommand("sim")],
        Annotated[FinetuneBench, tyro.conf.subcommand("finetune")],
        Annotated[FuzzBench, tyro.conf.subcommand("fuzz")],
    ]]]


def main(command: BenchCommand) -> None:
    """Entry point of ``tether bench``: run the chosen benchmark, print its summary (or its JSON)."""
    cmd = command.bench
    if isinstance(cmd, (RecordBench, PolicyBench, SimBench, FinetuneBench, FuzzBench)):
        run, show = {RecordBench: (bench_record, print_record), PolicyBench: (bench_policy, print_policy),
                     SimBench: (bench_sim, print_sim), FinetuneBench: (bench_finetune, print_finetune),
                     FuzzBench: (bench_fuzz, print_fuzz)}[type(cmd)]
        result = run(cmd)
        print(json.dumps(result, indent=2)) if cmd.json else show(result)
        return
    result = bench_loop(cmd)
    if cmd.json:
        print(json.dumps(result, indent=2))
        return
    r = result
    print(
        f"{r['policy']} at {r['rate_hz']:.0f} Hz for {r['duration_s']:.0f} s: achieved "
        f"{r['achieved_rate_hz']:.1f} Hz, period p50 {r['cycle_period_us']['p50']:.0f} us "
        f"p99 {r['cycle_period_us']['p99']:.0f} us, jitter {r['jitter_us']:.0f} us; policy step "
        f"p50 {r['policy_step_us']['p50']:.0f} us p99 {r['policy_step_us']['p99']:.0f} us "
        f"(transport p99 {r['baselines']['transport']['policy_step_us']['p99']:.0f} us, torch "
        f"eager p99 {r['baselines']['torch_eager']['policy_step_us']['p99']:.0f} us); {r['checks']}"
    )
