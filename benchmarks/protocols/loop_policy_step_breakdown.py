"""Where the policy step's p99 goes: the client side of the control loop, part by part.

Against a point-mass ``tether serve`` at ``--rate`` Hz (its own process), this process plays the
policy client of ``tether bench loop`` (the same MLP or BESO policy through ``PolicyRunner``) and
times each step of it on the client's clock (``time.monotonic()``, the clock the server stamps
its state messages with, so the two compare on one machine):

- wake: the state's publication (its ``t``) to its arrival in this process (``received``): the
  transport plus this process waking up;
- decode: arrival to ``next_state`` returning (msgpack and the schema check);
- act: ``PolicyRunner.act`` (preprocessing, onnxruntime, postprocessing);
- send: encoding and sending the command;
- total: publication to the command sent;
- gc: the garbage collector's collections that ran inside the step (``gc.callbacks``);
- server: the policy step as ``tether bench loop`` reports it (the server's publication to its
  reading the command, ``timing.command_latency_s``): total plus the server's own wake-up.

The same run measures variants of the client one after the other, each against the same server:
``base`` (as ``tether eval`` runs), ``gc-off`` (collector disabled in the loop, one collection
before), ``spin`` (busy-polls the socket instead of sleeping in ``poll``: is it the wake-up?) and
``gc-off+spin``. Each variant reports p50/p99/max of each part, and for the steps over the
variant's total p99, the mean of each part (which part makes the tail).

About 10 s per variant plus start-up; run it on a quiet machine::

    MUJOCO_GL=egl python benchmarks/protocols/loop_policy_step_breakdown.py --policy beso --rate 100 \
        --seconds 20 --out runs/loop_breakdown.json
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from tether.launch import processes
from tether.launch.bench_loop import LoopBench, _policies
from tether.robot.client import RobotClient
from tether.robot.drivers.pointmass import TASK

PARTS = ("wake", "decode", "act", "send", "total", "gc")


class GcTimer:
    """Durations of the collector's collections (s), with their start times."""

    def __init__(self):
        self.events: list[tuple[float, float, int]] = []  # (start, duration, generation)
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        now = time.monotonic()
        if phase == "start":
            self._start = now
        else:
            self.events.append((self._start, now - self._start, info["generation"]))


def run_variant(client: RobotClient, act, seconds: float, gc_off: bool, spin: bool, timer: GcTimer) -> dict:
    """Answer states for ``seconds``; returns per-part timings (us) of every step answered."""
    rows, server = [], []
    gc.collect()
    if gc_off:
        gc.disable()
    timer.events.clear()
    try:
        end = time.monotonic() + seconds
        client.latest_state()
        while time.monotonic() < end:
            if spin:
                while not client.pending():
                    pass
            state = client.next_state()
            got = time.monotonic()
            if state["timing"]["command_latency_s"] is not None:
                server.append(state["timing"]["command_latency_s"])
            if client.pending():
                continue  # act on the newest state only, as tether eval does
            if state["done"]:
                client.reset(TASK, int(state["seq"]))
                continue
            t0 = time.monotonic()
            action = act(state["observation"])
            t1 = time.monotonic()
            client.send_action(action, state["seq"])
            t2 = time.monotonic()
            rows.append((state["t"], state["received"], got, t0, t1, t2))
    finally:
        gc.enable()
    events = list(timer.events)
    parts = {k: [] for k in PARTS}
    for published, received, got, t0, t1, t2 in rows:
        parts["wake"].append(received - published)
        parts["decode"].append(got - received)
        parts["act"].append(t1 - t0)
        parts["send"].append(t2 - t1)
        parts["total"].append(t2 - published)
        parts["gc"].append(sum(d for s, d, _ in events if published <= s <= t2))
    us = {k: np.asarray(v) * 1e6 for k, v in parts.items()}
    p99 = np.percentile(us["total"], 99)
    tail = us["total"] > p99
    server_us = np.asarray(server) * 1e6
    return {
        "steps": len(rows),
        "collections": {f"gen{g}": sum(1 for *_, gen in events if gen == g) for g in range(3)},
        "collection_max_us": max((d for _, d, _ in events), default=0.0) * 1e6,
        **{k: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
               "max": float(v.max())} for k, v in us.items()},
        "server": {"p50": float(np.percentile(server_us, 50)), "p99": float(np.percentile(server_us, 99)),
                   "max": float(server_us.max())},
        "tail_mean_us": {k: float(v[tail].mean()) if tail.any() else 0.0 for k, v in us.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", choices=("mlp", "beso"), default="beso")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="per variant")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    timer = GcTimer()
    gc.callbacks.append(timer)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runner, _, parameters = _policies(LoopBench(policy=args.policy), folder)
        address = processes.free_tcp_address()
        server = processes.start(["serve", "--robot", "pointmass", "--address", address, "--rate-hz",
                                  str(args.rate), "--max-episode-steps", "100000000"], folder / "serve.log")
        results = {"policy": args.policy, "parameters": parameters, "rate_hz": args.rate, "variants": {}}
        try:
            processes.wait_for_server(address, server)
            with RobotClient(address, name="breakdown") as client:
                client.reset(TASK, 0)
                for name, gc_off, spin in (("base", False, False), ("gc-off", True, False),
                                           ("spin", False, True), ("gc-off+spin", True, True)):
                    r = run_variant(client, runner.act, args.seconds, gc_off, spin, timer)
                    results["variants"][name] = r
                    print(f"{name:12s} " + "  ".join(
                        f"{k} {r[k]['p50']:.0f}/{r[k]['p99']:.0f}" for k in (*PARTS, "server"))
                        + f"  (p50/p99 us; tail means: " + ", ".join(
                        f"{k} {v:.0f}" for k, v in r["tail_mean_us"].items()) + f"; collections {r['collections']})")
        finally:
            processes.stop(server)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
