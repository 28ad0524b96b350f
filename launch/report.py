"""Run reports: ``report.json``, ``report.md`` and ``report.png`` (success per task with 95%
Wilson intervals, and the histogram of the policy-step latency)."""

from __future__ import annotations

import json
import math
from pathlib import Path


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
    ax2.hist(latencies_ms, bins=50, color="tab:orange")
    lat = report["latency_ms"]
    for q, style in (("p50", "--"), ("p99", ":")):
        ax2.axvline(lat[q], color="k", linestyle=style, label=f"{q} {lat[q]:.2f} ms")
    ax2.set_xlabel("policy step latency (ms): observation received -> action sent")
    ax2.set_ylabel("steps")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


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


def write_report(out: Path, report: dict, latencies_ms: list[float]) -> dict:
    """Add Wilson intervals, write report.json / report.md / report.png into ``out``."""
    for r in report["tasks"].values():
        successes = round(r["success_rate"] * r["episodes"])
        r["success_ci95"] = list(wilson_interval(successes, r["episodes"]))
    (out / "report.json").write_text(json.dumps(report, indent=2))
    write_markdown(report, out / "report.md")
    plot_report(report, latencies_ms, out / "report.png")
    return report
