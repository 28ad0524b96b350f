"""``tether eval``: run an ONNX policy on a robot server for N episodes per task.

This is the deployment path: onnxruntime and ZeroMQ only, no torch. The policy runner answers
every state with an action; latency is measured robot side, from the state message's arrival to
the command leaving. Episode k of a task starts from seed ``seed + k`` (keep these away from the
collection seeds). Writes ``eval.json`` and up to ``videos_per_task`` MP4s per task.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from tether.robot.client import RobotClient
from tether.robot.runner import PolicyRunner
from tether.robot.security import ClientKeys
from tether.robot.video import write_mp4


@dataclass
class EvalCommand:
    """Evaluate an ONNX policy on a robot server: success rate, latency, videos."""

    policy: tyro.conf.Positional[Path]
    """policy.onnx written by tether export."""
    robot: str = "tcp://127.0.0.1:5555"
    """Address of a running robot server (tether serve)."""
    out: Path = Path("runs/eval")
    """Output folder for eval.json and videos/."""
    tasks: tuple[str, ...] = ()
    """Tasks to evaluate; default: every task of the policy."""
    episodes: int = 20
    """Episodes per task."""
    seed: int = 1_000_000
    """Seed of each task's first episode; episode k uses seed + k."""
    videos_per_task: int = 1
    """How many episodes per task to save as MP4 (needs a camera on the server)."""
    client_key: Path | None = None
    """This client's secret key (.key_secret), for a server with CurveZMQ keys."""
    server_public_key: Path | None = None
    """The server's public key (.key), with --client-key."""
    progress_lines: bool = False
    """Print 'progress DONE TOTAL' lines instead of a progress bar (for a parent process)."""


def percentile_ms(values_s: list[float], q: float) -> float:
    """The q-th percentile of durations given in s, in ms (NaN for none)."""
    return float(np.percentile(np.asarray(values_s) * 1000, q)) if values_s else float("nan")


def run_episode(client: RobotClient, runner: PolicyRunner, task: str, seed: int, camera: str | None):
    """One episode; returns (success, length, latencies in s, camera frames, server periods in s)."""
    runner.reset(task)
    state = client.reset(task, seed)
    latencies, periods, frames = [], [], []
    while True:
        if camera is not None:
            frames.append(state["observation"][camera])
        if state["done"]:
            return bool(state["success"]), int(state["step"]), latencies, frames, periods
        received = state["received"]
        action = runner.act(state["observation"])
        client.send_action(action, state["seq"])
        latencies.append(time.perf_counter() - received)
        state = client.latest_state()
        if state["step"] > 1:  # the first period of an episode also spans the reset
            periods.append(state["timing"]["period_s"])


def evaluate(cmd: EvalCommand, on_episode=None) -> dict:
    """Run the evaluation and write ``cmd.out/eval.json``; returns its content.

    Raises:
        tether.robot.client.RobotLinkError: the server is unreachable or refuses the policy.
        tether.robot.spec.SpecMismatchError: the policy does not fit the robot.
    """
    runner = PolicyRunner(cmd.policy, seed=cmd.seed)
    tasks = list(cmd.tasks or runner.tasks)
    total = len(tasks) * cmd.episodes
    cmd.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"policy": str(cmd.policy), "robot": cmd.robot, "tasks": {}, "videos": {}}
    all_latencies: list[float] = []
    all_periods: list[float] = []
    keys = None
    if cmd.client_key is not None:
        if cmd.server_public_key is None:
            raise ValueError("--client-key needs --server-public-key")
        keys = ClientKeys(cmd.client_key, cmd.server_public_key)
    with RobotClient(cmd.robot, spec=runner.spec, name="policy-runner", keys=keys) as client:
        client.spec.check_policy(runner.spec, tuple(tasks))
        cameras = [k for k, f in client.spec.observation.items() if f.is_image]
        camera = cameras[0] if cameras and cmd.videos_per_task > 0 else None
        for task in tasks:
            episodes = []
            for k in range(cmd.episodes):
                success, length, lat, frames, periods = run_episode(
                    client, runner, task, cmd.seed + k, camera if k < cmd.videos_per_task else None
                )
                episodes.append({"seed": cmd.seed + k, "success": success, "length": length})
                all_latencies += lat
                all_periods += periods
                if frames:
                    path = write_mp4(
                        cmd.out / "videos" / f"{task}_episode{k}.mp4",
                        np.stack(frames),
                        client.spec.control_rate_hz,
                    )
                    results["videos"].setdefault(task, []).append(str(path))
                if on_episode is not None:
                    on_episode(task, success, total)
            results["tasks"][task] = {
                "success_rate": float(np.mean([e["success"] for e in episodes])),
                "episodes": len(episodes),
                "mean_episode_length": float(np.mean([e["length"] for e in episodes])),
                "per_episode": episodes,
            }
    results["success_rate"] = float(np.mean([t["success_rate"] for t in results["tasks"].values()]))
    results["latency_ms"] = {
        "p50": percentile_ms(all_latencies, 50),
        "p99": percentile_ms(all_latencies, 99),
        "max": percentile_ms(all_latencies, 100),
        "samples": [round(x * 1000, 4) for x in all_latencies],
    }
    results["control_period_ms"] = {
        "target": 1000 / client.spec.control_rate_hz,
        "p50": percentile_ms(all_periods, 50),
        "p99": percentile_ms(all_periods, 99),
    }
    # The deployment path must run without torch: record the evidence next to the results.
    results["torch_imported"] = "torch" in sys.modules
    (cmd.out / "eval.json").write_text(json.dumps(results, indent=2))
    return results


def main(cmd: EvalCommand) -> None:
    if cmd.progress_lines:
        done = [0]

        def report(task: str, success: bool, total: int) -> None:
            done[0] += 1
            print(f"progress {done[0]} {total}", flush=True)

        results = evaluate(cmd, report)
    else:
        from rich.progress import Progress

        with Progress() as progress:
            bar = progress.add_task("eval", total=None)
            results = evaluate(
                cmd, lambda task, ok, total: progress.update(bar, advance=1, total=total)
            )
    summary = {t: r["success_rate"] for t, r in results["tasks"].items()}
    print(f"success rate {results['success_rate']:.2f} {summary}; "
          f"latency p50 {results['latency_ms']['p50']:.2f} ms, p99 {results['latency_ms']['p99']:.2f} ms")
