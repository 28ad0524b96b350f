"""How many control ticks `tether serve --robot feetech` holds at its rate, against the STS3215 bus
emulator on a pseudo-terminal (issue 22's target: >= 99% of ticks at 100 Hz for an SO-101).

Three processes, as on a robot computer: the emulated arm (``python -m
tether.robot.drivers.emulators sts``: six STS3215 servos behind a pty, answering Feetech's
protocol byte by byte), ``tether serve --robot feetech`` driving it through Feetech's own
``scservo_sdk`` (one Sync Write of Goal Position and one Sync Read of Present Position per tick),
and this process as the controller, answering every state with a command (a slow sine around the
start pose) so each tick carries a bus write and a bus read.

Reported (JSON on stdout, also ``--out FILE``):
  ticks_seen, achieved_rate_hz (ticks over the controller's clock), achieved_fraction = that / rate;
  on_time_fraction = 1 - overruns / ticks (a tick that ended past the next deadline overran:
      the server's own count, ``tether serve --stats-json``);
  period_ms p50 / p99 / max and jitter (p99 - p50), from the published states;
  tick_compute_ms p50 / p99 (the server's time in one tick: bus write + bus read + publish);
  commanded_fraction: ticks that applied a command of this controller (not a hold).
Exit code 1 when achieved_fraction or on_time_fraction is below --target (default 0.99).

    python benchmarks/protocols/feetech_serve_rate.py --rate 100 --duration 30
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tether.launch import processes
from tether.robot.client import RobotClient

START_TICKS = ("3000", "1000", "2048", "500", "3500", "2100")  # servos mounted at arbitrary angles


def start_emulator(folder: Path) -> tuple[subprocess.Popen, Path]:
    """The emulated SO-101 in its own process; returns it and the arm config it wrote."""
    config = folder / "so101.json"
    proc = subprocess.Popen([sys.executable, "-m", "tether.robot.drivers.emulators", "sts",
                             "--start-ticks", *START_TICKS, "--config-out", str(config)],
                            stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.strip() == "ready":
            return proc, config
    raise RuntimeError(f"the emulator exited with code {proc.wait()} before it was ready")


def percentiles_ms(values, qs=(50, 99)) -> dict:
    v = np.asarray(values, float) * 1e3
    return {f"p{q}": float(np.percentile(v, q)) for q in qs} | {"max": float(v.max())}


def drive(address: str, rate: float, duration: float) -> dict:
    """Answer every state for ``duration`` s; the periods, compute times and commanded ticks seen."""
    periods, compute, received, commanded = [], [], [], 0
    with RobotClient(address) as client:
        state = client.reset(None, None)
        start = np.asarray(state["observation"]["observation.state"], np.float32)
        t0 = time.perf_counter()
        first_step = state["step"]
        while time.perf_counter() - t0 < duration:
            state = client.next_state()
            timing = state["timing"]
            if state["step"] > first_step + 1:  # the first period after the reset spans it
                periods.append(timing["period_s"])
                compute.append(timing["compute_s"])
                received.append(state["received"])
                commanded += timing["command_latency_s"] is not None
            if client.pending():
                continue  # answer the newest state only
            t = time.perf_counter() - t0
            target = start + 0.2 * np.sin(2 * np.pi * 0.25 * t) * np.ones_like(start)
            client.send_action(target.astype(np.float32), state["seq"])
    return {"periods": periods, "compute": compute, "commanded": commanded, "received": received}


def measure(rate: float, duration: float, folder: Path) -> dict:
    emulator, config = start_emulator(folder)
    address = processes.free_tcp_address()
    stats_path = folder / "stats.json"
    server = processes.start(["serve", "--robot", "feetech", "--robot-config", str(config), "--rate-hz",
                              str(rate), "--address", address, "--stats-json", str(stats_path)],
                             folder / "serve.log")
    try:
        processes.wait_for_server(address, server)
        seen = drive(address, rate, duration)
    finally:
        processes.stop(server)
        emulator.terminate()
        emulator.wait(10)
    stats = json.loads(stats_path.read_text())
    periods, received = seen["periods"], seen["received"]
    p = percentiles_ms(periods)
    achieved_hz = (len(received) - 1) / (received[-1] - received[0])  # ticks over the client's clock
    return {
        "rate_hz": rate,
        "duration_s": duration,
        "ticks_seen": len(received),
        "achieved_rate_hz": achieved_hz,
        "achieved_fraction": achieved_hz / rate,
        "server_ticks": stats["ticks"],
        "server_overruns": stats["overruns"],
        "on_time_fraction": 1.0 - stats["overruns"] / max(stats["ticks"], 1),
        "period_ms": p | {"jitter": p["p99"] - p["p50"]},
        "tick_compute_ms": percentiles_ms(seen["compute"]),
        "commanded_fraction": seen["commanded"] / max(len(received), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="control rate (Hz)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--target", type=float, default=0.99, help="fraction of ticks that must be held")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.rate, args.duration, Path(tmp))
    result["target"] = args.target
    result["met"] = result["achieved_fraction"] >= args.target and result["on_time_fraction"] >= args.target
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    sys.exit(0 if result["met"] else 1)


if __name__ == "__main__":
    main()
