"""``tether bench finetune``: does a learner training next to the actor slow the robot's control
loop? (Issue target: the actor's control rate drops by <= 5% while the learner trains.)

A point-mass robot server runs in real time at ``--rate`` in its own process. The fine-tuning
actor (onnxruntime, in this process) drives it for ``--duration`` seconds twice:

* ``alone``: no learner (the actor queues its transitions for nobody), the baseline;
* ``training``: ``tether finetune learner`` in another process, warm-up 0, training at UTD
  ``--utd`` on what the actor streams, publishing weights the actor swaps in at episode ends.

The control rate is counted by an observer of the robot server: ticks per second whose command
came from the actor (a tick whose command came late is held and not counted). Both processes
share the machine, as on a robot computer that also learns. The policy and critics carry random
weights of the benchmark's size: only their cost matters.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tether.launch import processes
from tether.robot.client import RobotClient


@dataclass
class FinetuneBench:
    """Benchmark the actor's control rate with and without a learner training beside it."""

    rate: float = 50.0
    """Control rate of the robot server (Hz)."""
    duration: float = 30.0
    """Seconds of each phase."""
    utd: int = 4
    """The learner's update-to-data ratio."""
    batch_size: int = 256
    hidden: tuple[int, ...] = (256, 256)
    """Actor and critic widths (SAC, 2 critics)."""
    episode_steps: int = 200
    """Episode length of the point mass (ticks)."""
    json: bool = False
    """Print the result as JSON only."""


def _count_commanded(address: str, seconds: float) -> dict:
    """Observe the server for ``seconds``: ticks, ticks with a fresh command, their rate (Hz)."""
    ticks = commanded = 0
    with RobotClient(address, role="observer", name="bench-observer") as observer:
        observer.latest_state()
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            state = observer.next_state()
            ticks += 1
            commanded += state["timing"]["command_latency_s"] is not None
    return {"ticks": ticks, "commanded_ticks": commanded, "seconds": elapsed,
            "tick_rate_hz": ticks / elapsed, "control_rate_hz": commanded / elapsed}


def _wait_for_learner(process, progress: Path, timeout_s: float = 120.0) -> None:
    """Until the learner runs (its first progress line: torch imported, socket bound).

    Raises:
        RuntimeError: it exited, or did not start within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while not progress.exists():
        if process.poll() is not None:
            raise RuntimeError(f"the learner exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the learner did not start within {timeout_s:.0f} s")
        time.sleep(0.2)


def _phase(robot: str, learner: str, policy: Path, out: Path, seconds: float) -> dict:
    from tether.robot.actor import Actor

    actor = Actor(robot, learner, out, policy=policy, send_every=25)
    stop = threading.Event()
    thread = threading.Thread(target=actor.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # connected and acting
        counts = _count_commanded(robot, seconds)
    finally:
        stop.set()
        thread.join(30)
        actor.close()
    return {**counts, "actor_steps": actor.stats.steps, "weight_swaps": actor.stats.swaps}


def bench_finetune(cmd: FinetuneBench) -> dict:
    """Run both phases (see the module docstring); returns the result dict."""
    import torch

    from tether.policies.calql import CalQl
    from tether.policies.configs import CalQlConfig, IqlConfig, SacConfig
    from tether.policies.data import Normalizer
    from tether.policies.export import export_policy
    from tether.policies.offline import save_offline_policy
    from tether.robot.drivers.pointmass import TASK, pointmass_spec

    torch.manual_seed(0)
    spec = pointmass_spec(cmd.rate)
    norm = Normalizer(np.zeros(4), np.ones(4), np.zeros(2), np.ones(2))
    cfg = CalQlConfig(sac=SacConfig(hidden=tuple(cmd.hidden), critics=2), actions=2)
    model = CalQl(cfg, 4, 2, 1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dims = {"obs_dim": 4, "action_dim": 2, "goal_dim": 1, "camera": None, "image_shape": None}
        ckpt = save_offline_policy(tmp / "calql.pt", "calql", model, IqlConfig(), dims, norm, [TASK], spec, cfg,
                                   {"column": "next.reward", "normalization": "none", "shift": 0.0})
        policy = export_policy(model.actor, norm, spec, [TASK], tmp / "policy.onnx")
        robot = processes.free_tcp_address()
        server = processes.start(["serve", "--robot", "pointmass", "--address", robot, "--rate-hz", str(cmd.rate),
                                  "--max-episode-steps", str(cmd.episode_steps)], tmp / "serve.log")
        learner = None
        try:
            processes.wait_for_server(robot, server)
            alone = _phase(robot, processes.free_tcp_address(), policy, tmp / "alone", cmd.duration)
            address = processes.free_tcp_address()
            learner = processes.start(
                ["finetune", "learner", str(ckpt), "--address", address, "--out", str(tmp / "learner"),
                 "--online.warmup-steps", "0", "--online.utd", str(cmd.utd),
                 "--online.batch-size", str(cmd.batch_size), "--online.publish-every", "500"],
                tmp / "learner.log")
            _wait_for_learner(learner, tmp / "learner" / "progress.jsonl")
            training = _phase(robot, address, policy, tmp / "training", cmd.duration)
        finally:
            if learner is not None:
                processes.stop(learner)  # it writes its last progress line on the way out
            processes.stop(server)
        log = tmp / "learner" / "progress.jsonl"
        progress = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    updates = progress[-1]["updates"] if progress else 0
    drop = 1.0 - training["control_rate_hz"] / alone["control_rate_hz"]
    return {
        "rate_hz": cmd.rate, "duration_s": cmd.duration, "utd": cmd.utd, "hidden": list(cmd.hidden),
        "batch_size": cmd.batch_size, "alone": alone, "training": training,
        "learner_updates": updates, "learner_updates_per_s": updates / cmd.duration,
        "control_rate_drop": drop,
        "checks": {"control_rate_drop_le_5pct": drop <= 0.05, "learner_trained": updates > 0},
    }


def print_result(r: dict) -> None:
    """One line: the control rate alone and beside the learner, the drop, the learner's updates."""
    a, t = r["alone"], r["training"]
    print(f"actor at {r['rate_hz']:.0f} Hz for {r['duration_s']:.0f} s: alone {a['control_rate_hz']:.1f} Hz, "
          f"with the learner training {t['control_rate_hz']:.1f} Hz (drop {100 * r['control_rate_drop']:.1f}%); "
          f"learner {r['learner_updates']} updates ({r['learner_updates_per_s']:.0f}/s), "
          f"{t['weight_swaps']} weight swaps; {r['checks']}")
