"""Run reports: ``report.json``, ``report.md`` and ``report.png`` (success per task with 95%
Wilson intervals, and the histogram of the policy-step latency); and ``tether eval``'s
``eval.md`` / ``eval.png``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (Wilson, JASA 1927); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def plot_report(report: dict, latencies_ms: list[float], path: Path) -> Path:
    """Success per task (bars with Wilson intervals) and latency histogram, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(report["tasks"])
    rates = [report["tasks"][t]["success_rate"] for t in tasks]
    lows, highs = zip(*(report["tasks"][t]["success_ci95"] for t in tasks)) if tasks else ((), ())
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
    ax1.bar(tasks, rates, color="tab:blue",
            yerr=[[r - lo for r, lo in zip(rates, lows)], [hi - r for r, hi in zip(rates, highs)]],
            capsize=6)
    ax1.set_ylim(0, 1.05)
    ax1.set_ylabel("success rate (95% Wilson CI)")
    ax1.set_title(f"success per task (mean {report['success_rate']:.2f})")
    ax1.tick_params(axis="x", labelrotation=15)
    latency_histogram(ax2, latencies_ms, report["latency_ms"],
                      "policy step latency (ms): observation received -> action sent")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def latency_histogram(ax, samples_ms: list[float], lat: dict, xlabel: str) -> None:
    """Histogram of policy latencies (ms) on ``ax``, with the p50 and p99 of ``lat`` marked."""
    ax.hist(samples_ms, bins=50, color="tab:orange")
    for q, style in (("p50", "--"), ("p99", ":")):
        ax.axvline(lat[q], color="k", linestyle=style, label=f"{q} {lat[q]:.2f} ms")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("steps")
    ax.legend()


def write_markdown(report: dict, path: Path) -> Path:
    """A human-readable summary of ``report``."""
    lines = [
        "# tether demo report",
        "",
        f"Mean success rate over tasks: **{report['success_rate']:.2f}**",
        "",
        "| task | success rate | 95% CI | episodes | mean episode length |",
        "|---|---|---|---|---|",
    ]
    for task, r in report["tasks"].items():
        lo, hi = r["success_ci95"]
        lines.append(
            f"| {task} | {r['success_rate']:.2f} | [{lo:.2f}, {hi:.2f}] | {r['episodes']} | "
            f"{r['mean_episode_length']:.1f} |"
        )
    lat, t = report["latency_ms"], report["timings_s"]
    lines += [
        "",
        f"Policy step latency (robot side, observation received -> action sent): "
        f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms.",
        "",
        robot_server_line(report["evaluation"], report["control_period_ms"]["target"]),
        "",
        "Timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items()) + ".",
        "",
        f"Dataset: `{report['dataset']}`. Policy: `{report['policy']['onnx']}` "
        f"({report['policy']['parameters']} parameters).",
        "",
        "![report](report.png)",
    ]
    if report.get("videos"):
        lines += ["", "Videos:"] + [f"- {task}: `{p}`" for task, p in report["videos"].items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def robot_server_line(evaluation: dict, period_ms: float) -> str:
    """How the evaluation's robot server ticked, and the ticks it held for want of a command."""
    mode = (f"lock-stepped (a tick as soon as the policy answers, a hold after {period_ms:.1f} ms "
            "without an answer)" if evaluation["lockstep"] else f"real time ({period_ms:.1f} ms ticks)")
    return (f"Robot server: {mode}; ticks held for want of a command: {evaluation['held_ticks']} of "
            f"{evaluation['ticks']}.")


def write_report(out: Path, report: dict, latencies_ms: list[float]) -> dict:
    """Add Wilson intervals, write report.json / report.md / report.png into ``out``."""
    for r in report["tasks"].values():
        successes = round(r["success_rate"] * r["episodes"])
        r["success_ci95"] = list(wilson_interval(successes, r["episodes"]))
    (out / "report.json").write_text(json.dumps(report, indent=2))
    write_markdown(report, out / "report.md")
    plot_report(report, latencies_ms, out / "report.png")
    return report


def plot_eval(results: dict, path: Path) -> Path:
    """``tether eval``'s figure: success per task (bars, 95% Wilson CI), episode returns per task
    (box plots, one dot per episode) and the policy latency histogram (p50, p99 marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["tasks"])
    stats = [results["tasks"][t] for t in tasks]
    rates = [0.0 if math.isnan(r["success_rate"]) else r["success_rate"] for r in stats]
    lows = [min(rate, r["success_ci95"][0]) for rate, r in zip(rates, stats)]
    highs = [max(rate, r["success_ci95"][1]) for rate, r in zip(rates, stats)]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4), dpi=110)
    ax1.bar(tasks, rates, color="tab:blue", capsize=6,
            yerr=[[r - lo for r, lo in zip(rates, lows)], [hi - r for r, hi in zip(rates, highs)]])
    for i, r in enumerate(stats):
        ax1.text(i, 0.02, f"{r['successes']}/{r['episodes']}", ha="center", color="white")
    ax1.set_ylim(0, 1.05)
    ax1.set_ylabel("success rate (95% Wilson CI)")
    ax1.set_title(f"success per task (overall {results['success_rate']:.2f})")
    ax1.tick_params(axis="x", labelrotation=15)
    returns = [[e["return"] for e in r["per_episode"] if e.get("status") != "aborted"] or [0.0]
               for r in stats]
    ax2.boxplot(returns, showfliers=False)
    for i, values in enumerate(returns, start=1):
        ax2.plot(np.full(len(values), i) + np.linspace(-0.15, 0.15, len(values)), values, ".",
                 color="tab:green", alpha=0.6)
    ax2.set_xticks(range(1, len(tasks) + 1), tasks, rotation=15)
    ax2.set_ylabel("episode return")
    ax2.set_title("returns per task")
    lat = results["latency_ms"]
    latency_histogram(ax3, lat["samples"] or [0.0], lat, "policy latency (ms)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def eval_markdown(results: dict) -> str:
    """``eval.md``: what ran, success per task with 95% Wilson intervals, returns, lengths,
    policy latency, the robot link's timing (robot-server modes) and the videos."""
    lo, hi = results["success_ci95"]
    mode = {"robot": f"robot server `{results.get('robot')}`",
            "operator": f"operator-judged episodes on robot server `{results.get('robot')}`",
            "sim": f"direct simulation `{results.get('sim')}` ({results.get('num_envs')} envs)"}
    seeds = results["config"]["seed"]
    lines = [
        "# tether eval",
        "",
        f"Policy `{results['policy']}` on {mode.get(results['mode'], results['mode'])}; "
        f"episode k of each task uses seed {seeds} + k.",
        "",
        f"Success rate: **{results['success_rate']:.3f}** ({results['successes']}/{results['episodes']}), "
        f"95% Wilson CI [{lo:.3f}, {hi:.3f}]; mean return {results['aggregated']['avg_sum_reward']:.3f}.",
        "",
        "| task | success rate | 95% CI | successes / episodes | return (mean ± std) | mean length | aborted |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, r in results["tasks"].items():
        tlo, thi = r["success_ci95"]
        lines.append(
            f"| {task} | {r['success_rate']:.3f} | [{tlo:.3f}, {thi:.3f}] | {r['successes']} / "
            f"{r['episodes']} | {r['mean_return']:.3f} ± {r['std_return']:.3f} | "
            f"{r['mean_episode_length']:.1f} | {r['aborted']} |"
        )
    lat = results["latency_ms"]
    where = "in process, one policy call" if results["mode"] == "sim" else \
        "robot side, observation received -> action sent"
    lines += ["", f"Policy latency ({where}): p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, "
                  f"max {lat['max']:.2f} ms."]
    link = results.get("link")
    if link:
        p, c = link["period_ms"], link["command_latency_ms"]
        lines += ["", f"Robot link: tick period p50 {p['p50']:.2f} ms, p99 {p['p99']:.2f} ms "
                      f"(target {p['target']:.2f} ms, jitter {p['jitter']:.2f} ms); command latency "
                      f"(state published -> command received, server clock) p50 {c['p50']:.2f} ms, "
                      f"p99 {c['p99']:.2f} ms; ticks held for want of a command: {link['held_ticks']}."]
    lines += ["", "![eval](eval.png)"]
    videos = [(e["task"], e["video"]) for e in results["per_episode"] if e.get("video")]
    if videos:
        lines += ["", "Videos:"] + [f"- {task}: `{Path(v).name}`" for task, v in videos]
    for w in results.get("warnings", []):
        lines += ["", f"Warning: {w}"]
    return "\n".join(lines) + "\n"


def write_eval_report(out: Path, results: dict) -> None:
    """Write ``eval.md`` and ``eval.png`` for ``results`` (the content of eval.json) into ``out``."""
    (out / "eval.md").write_text(eval_markdown(results))
    plot_eval(results, out / "eval.png")
