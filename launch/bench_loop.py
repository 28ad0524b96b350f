"""``tether bench loop``: the timing of the robot link with a policy in the loop, at one or more
control rates, with its baselines.

For each rate a point-mass robot server runs in its own process (``tether serve --robot
pointmass``); this process plays the policy client. Three phases run against the same server, one
after the other:

* transport: the client answers every state with a constant action (no policy): the bare round
  trip, state published -> command received by the server;
* onnxruntime: the policy through ``PolicyRunner`` (what runs on a robot);
* torch eager: the same weights in torch (one thread, like the runner), for comparison.

The server stamps each applied command with the time from publishing the state it answers to
receiving it (``timing.command_latency_s``): that is the policy step. The cycle period is the
server's own tick-to-tick time; jitter is its p99 - p50; overruns are the server's count of ticks
that ended past the next deadline (``tether serve --stats-json``), over all three phases. With
``--fuzz-rate``, a fuzzing client in a process of its own (``bench_fuzz.fuzz_beside``) sends
mutated messages all along. Policies carry random weights: only their cost matters here.

With ``--realtime on`` (or ``both``: without, then with, in the same run) the server runs on a
core of its own at SCHED_FIFO and the client on the others (``tether.robot.realtime``).

Targets checked per rate (issue 21): achieved rate >= 99.5% of nominal, jitter <= 200 us,
overruns <= 0.1% of ticks, policy step p99 <= 1.5 x (transport p99 + inference p99).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from tether.launch import UsageError, processes
from tether.launch.bench_fuzz import fuzz_beside, percentiles_us
from tether.robot.client import RobotClient
from tether.robot.realtime import pin_to_cpus, set_fifo_priority


@dataclass
class LoopBench:
    """Benchmark the control loop: rate, jitter and policy step latency, with baselines."""

    rate: str = "500"
    """Control rates of the server (Hz), comma-separated, e.g. 100,500,1000: one server each."""
    duration: float = 60.0
    """Seconds of the onnxruntime phase."""
    baseline_duration: float = 10.0
    """Seconds of each baseline phase (transport, torch eager)."""
    policy: Literal["mlp", "beso"] = "mlp"
    """mlp: 2 x 256 MLP; beso: 3-step BESO (the demo's transformer)."""
    fuzz_rate: float = 0.0
    """Messages/s of a fuzzing client beside the controller (0: none)."""
    realtime: Literal["off", "on", "both"] = "off"
    """on: the server on the last CPU at SCHED_FIFO 80 (tether serve --cpus --fifo-priority),
    the policy client on the others at SCHED_FIFO 70; both: every rate without, then with (the
    before and after in one run). Needs the right to SCHED_FIFO (root or CAP_SYS_NICE)."""
    view: Literal["off", "on", "both"] = "off"
    """on: the policy client also feeds a live Rerun view (tether.launch.rerun_view.LiveView,
    written to view_<rate>.rrd in --out) with every state, action and inference time, as tether
    eval --rerun does; both: every rate without, then with, in the same run (what the view costs
    the loop: achieved rate, held ticks, overruns). Needs pip install 'tether[rerun]'."""
    busy_wait: Literal["off", "on", "both"] = "off"
    """on: the policy client polls the link without sleeping between states (``tether eval
    --busy-wait``: a core at 100%, the policy runs on a warm core); both: every rate without, then
    with, in the same run."""
    out: Path | None = None
    """Folder for loop.json and loop_histograms.png (cycle period and policy step per rate)."""
    json: bool = False
    """Print the result as JSON only."""


def parse_rates(text: str) -> list[float]:
    """``"100,500,1000"`` -> [100.0, 500.0, 1000.0].

    Raises:
        UsageError: not a comma-separated list of positive numbers.
    """
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise UsageError(f"--rate {text!r}: expected rates in Hz, e.g. 100,500,1000") from e
    if not rates or min(rates) <= 0:
        raise UsageError(f"--rate {text!r}: expected positive rates in Hz, e.g. 100,500,1000")
    return rates


def run_phase(client: RobotClient, act: Callable[[dict], np.ndarray], seconds: float, view=None) -> dict:
    """Answer states with ``act`` for ``seconds``; returns timing statistics of the phase (the
    cycle periods and policy steps themselves in ``_periods_s`` and ``_steps_s``) and
    ``held_ticks``: ticks the server applied no command on (the client was late). ``view``: a
    ``LiveView`` offered every state (with the action and its inference time after the send)."""
    periods, latencies, inference, stamps, observe = [], [], [], [], []
    held = 0
    end = time.perf_counter() + seconds
    client.latest_state()
    while time.perf_counter() < end:
        state = client.next_state()
        timing = state["timing"]
        periods.append(timing["period_s"])
        stamps.append((state["t"], state["seq"]))
        if timing["command_latency_s"] is not None:
            latencies.append(timing["command_latency_s"])
        held += timing["command_age_s"] is None
        if client.pending():
            if view is not None:
                t0 = time.perf_counter()
                view.observe(state)
                observe.append(time.perf_counter() - t0)
            continue  # act on the newest state only
        if state["done"]:
            client.reset("reach-origin", int(state["seq"]))
            continue
        t0 = time.perf_counter()
        action = act(state["observation"])
        inference.append(time.perf_counter() - t0)
        client.send_action(action, state["seq"])
        if view is not None:  # after the send, as in tether eval
            t0 = time.perf_counter()
            view.observe(state, action, inference[-1])
            observe.append(time.perf_counter() - t0)
    (t_first, seq_first), (t_last, seq_last) = stamps[0], stamps[-1]
    period = percentiles_us(periods)
    return {
        "achieved_rate_hz": (seq_last - seq_first) / (t_last - t_first),  # on the server's clock
        "cycle_period_us": period,
        "jitter_us": period["p99"] - period["p50"],
        "policy_step_us": percentiles_us(latencies),
        "inference_us": percentiles_us(inference),
        "ticks": len(periods),
        "held_ticks": held,
        # the view's whole cost in the loop's thread: a put on its queue (None without a view)
        "view_observe_us": percentiles_us(observe) if view is not None else None,
        "_periods_s": periods,
        "_steps_s": latencies,
    }


def _policies(cmd: LoopBench, folder: Path):
    """The ONNX runner and the torch-eager act function of the benchmarked policy, its size."""
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
    model = MlpPolicy(4, 2, 1) if cmd.policy == "mlp" else Beso(BesoConfig(), 4, 2, 1)
    model.eval()
    identity = Normalizer(np.zeros(4, np.float32), np.ones(4, np.float32),
                          np.zeros(2, np.float32), np.ones(2, np.float32))
    spec = pointmass_spec(100.0)  # the runner checks the rate against each server's below
    graph = (MlpGraph if cmd.policy == "mlp" else BesoGraph)(model, identity, spec).eval()
    runner = PolicyRunner(export_policy(model, identity, spec, [TASK], folder / "policy.onnx"))
    runner.reset(TASK)
    goal = torch.ones(1, 1)

    def torch_act(obs: dict) -> np.ndarray:
        x = torch.tensor(obs["observation.state"], dtype=torch.float32).view(1, 1, 4)
        with torch.no_grad():
            if cmd.policy == "mlp":
                return graph(x, goal)[0].numpy()
            window = x.expand(1, model.cfg.window, 4)
            return graph(window, goal, torch.randn(1, model.cfg.window, 2))[0][0].numpy()

    return runner, torch_act, sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def _client_realtime(on: bool, server_cpu: int):
    """With ``on``, this process on every CPU but ``server_cpu`` at SCHED_FIFO 70 while inside."""
    if not on:
        yield
        return
    cpus = os.sched_getaffinity(0)
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        pin_to_cpus(tuple(sorted(cpus - {server_cpu})) or (server_cpu,))
        set_fifo_priority(70)
        yield
    finally:
        os.sched_setscheduler(0, policy, param)
        os.sched_setaffinity(0, cpus)


def bench_rate(cmd: LoopBench, rate: float, runner, torch_act, folder: Path, realtime: bool = False,
               view: bool = False, busy_wait: bool = False) -> dict:
    """The three phases against a point-mass server at ``rate`` Hz (see the module docstring);
    with ``realtime``, server and client pinned apart at SCHED_FIFO; with ``view``, the client
    feeds a live Rerun view written to ``folder/view_<rate>.rrd`` all along; with ``busy_wait``,
    the client polls for states without sleeping."""
    from tether.robot.drivers.pointmass import TASK

    zero = np.zeros(2, np.float32)
    address = processes.free_tcp_address()
    name = f"{rate:g}{'_rt' if realtime else ''}{'_view' if view else ''}{'_busy' if busy_wait else ''}"
    stats_path = folder / f"serve_{name}.json"
    server_cpu = max(os.sched_getaffinity(0))
    args = ["serve", "--robot", "pointmass", "--address", address, "--rate-hz", str(rate),
            "--max-episode-steps", "100000000", "--stats-json", str(stats_path)]
    if realtime:
        args += ["--cpus", str(server_cpu), "--fifo-priority", "80"]
    server = processes.start(args, folder / f"serve_{name}.log")
    fuzzer = live = view_stats = None
    try:
        processes.wait_for_server(address, server)
        if cmd.fuzz_rate > 0:
            seconds = cmd.duration + 2 * cmd.baseline_duration + 30
            fuzzer = multiprocessing.get_context("spawn").Process(
                target=fuzz_beside, args=(address, cmd.fuzz_rate, seconds), daemon=True)
            fuzzer.start()
        with RobotClient(address, name="bench", busy_wait=busy_wait) as client, _client_realtime(realtime, server_cpu):
            if view:
                from tether.launch.rerun_view import LiveView, open_recording

                live = LiveView(open_recording("bench", folder / f"view_{name}.rrd"), client.spec)
            client.reset(TASK, 0)
            transport = run_phase(client, lambda obs: zero, cmd.baseline_duration, live)
            onnx_phase = run_phase(client, runner.act, cmd.duration, live)
            eager = run_phase(client, torch_act, cmd.baseline_duration, live)
    finally:
        if live is not None:
            view_stats = asdict(live.close())
        if fuzzer is not None:
            fuzzer.terminate()
            fuzzer.join(10)
        processes.stop(server)
    stats = json.loads(stats_path.read_text())
    overruns = stats["overruns"] / max(1, stats["ticks"])
    bound = 1.5 * (transport["policy_step_us"]["p99"] + onnx_phase["inference_us"]["p99"])
    return {
        "rate_hz": rate,
        "realtime": realtime,
        "busy_wait": busy_wait,
        "view": view_stats,
        "duration_s": cmd.duration,
        **onnx_phase,
        "overrun_fraction": overruns,
        "server": {k: stats[k] for k in ("ticks", "overruns", "received")} | {"rejected": stats["rejected"]},
        "baselines": {"transport": transport, "torch_eager": eager},
        "checks": {
            "rate_ge_99_5pct": onnx_phase["achieved_rate_hz"] >= 0.995 * rate,
            "jitter_le_200us": onnx_phase["jitter_us"] <= 200.0,
            "overruns_le_0_1pct": overruns <= 0.001,
            "policy_step_p99_le_1_5x_transport_plus_inference": onnx_phase["policy_step_us"]["p99"] <= bound,
        },
    }


def plot_histograms(per_rate: list[dict], path: Path) -> None:
    """Cycle period and policy step histograms (onnxruntime phase) per rate, one column each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(per_rate), figsize=(4.5 * len(per_rate), 6), squeeze=False)
    for col, r in enumerate(per_rate):
        for row, (key, label) in enumerate((("_periods_s", "cycle period"), ("_steps_s", "policy step"))):
            ax = axes[row][col]
            values = np.asarray(r[key], np.float64) * 1e3
            if values.size:
                ax.hist(values, bins=100, log=True)
            if row == 0:
                ax.axvline(1e3 / r["rate_hz"], color="red", ls="--", label="nominal")
                ax.legend()
            ax.set_title(f"{label} at {r['rate_hz']:g} Hz{' (real-time)' if r['realtime'] else ''}"
                         f"{' (Rerun view)' if r['view'] else ''}{' (busy-wait)' if r['busy_wait'] else ''}")
            ax.set_xlabel("ms")
            ax.set_ylabel("ticks" if row == 0 else "commands")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bench_loop(cmd: LoopBench) -> dict:
    """Run the three phases at every rate; returns the result dict (see the module docstring)
    and, with ``cmd.out``, writes loop.json and loop_histograms.png there."""
    rates = parse_rates(cmd.rate)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(cmd.out or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        runner, torch_act, parameters = _policies(cmd, folder)
        modes = {"off": (False,), "on": (True,), "both": (False, True)}
        if cmd.view != "off":
            from tether.launch.rerun_view import import_rerun

            import_rerun()  # missing rerun-sdk: one line before any server starts
        per_rate = [bench_rate(cmd, rate, runner, torch_act, folder, rt, v, busy) for rate in rates
                    for rt in modes[cmd.realtime] for v in modes[cmd.view] for busy in modes[cmd.busy_wait]]
        plot_histograms(per_rate, folder / "loop_histograms.png")
        for r in per_rate:
            for phase in (r, r["baselines"]["transport"], r["baselines"]["torch_eager"]):
                phase.pop("_periods_s"), phase.pop("_steps_s")
        result = {"policy": cmd.policy, "parameters": parameters, "fuzz_rate": cmd.fuzz_rate, "rates": per_rate}
        (folder / "loop.json").write_text(json.dumps(result, indent=1))
    return result


def print_result(result: dict) -> None:
    """A line per rate: achieved rate, periods, jitter, overruns, policy step against baselines."""
    for r in result["rates"]:
        print(
            f"{result['policy']} at {r['rate_hz']:.0f} Hz{' real-time' if r['realtime'] else ''}"
            f"{' with a Rerun view' if r['view'] else ''}{' busy-waiting' if r['busy_wait'] else ''} for "
            f"{r['duration_s']:.0f} s"
            f"{' under fuzz' if result['fuzz_rate'] else ''}: achieved {r['achieved_rate_hz']:.1f} Hz, period p50 "
            f"{r['cycle_period_us']['p50']:.0f} us p99 {r['cycle_period_us']['p99']:.0f} us, jitter "
            f"{r['jitter_us']:.0f} us, overruns {100 * r['overrun_fraction']:.3f}%, held ticks "
            f"{r['held_ticks']}/{r['ticks']}"
            + (f" (view: {r['view']['logged']} states logged, {r['view']['dropped']} dropped, observe p50 "
               f"{r['view_observe_us']['p50']:.1f} us p99 {r['view_observe_us']['p99']:.1f} us)" if r["view"] else "")
            + "; policy step p50 "
            f"{r['policy_step_us']['p50']:.0f} us p99 {r['policy_step_us']['p99']:.0f} us (transport p99 "
            f"{r['baselines']['transport']['policy_step_us']['p99']:.0f} us, inference p99 "
            f"{r['inference_us']['p99']:.0f} us, torch eager step p99 "
            f"{r['baselines']['torch_eager']['policy_step_us']['p99']:.0f} us); {r['checks']}"
        )
