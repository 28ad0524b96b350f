"""``tether eval compare RUN_A RUN_B ...``: evaluations side by side, and whether they differ.

For every task the runs share, and overall (episodes pooled over those tasks), each run is
compared with the first (the baseline) by a two-sided Fisher exact test on the 2x2 table of
successes and failures (``scipy.stats.fisher_exact``; exact for the small counts of robot
evaluations, where the normal approximation of a two-proportion z-test is poor). Without scipy a
pooled two-proportion z-test is used instead, and the report says so. p-values are per comparison,
not corrected for multiple comparisons: with many tasks, expect about ``alpha`` x (number of tests)
false positives.

Writes ``compare.json``, ``compare.md`` and ``compare.png`` (success per task and overall, one bar
per run, 95% Wilson intervals) into ``--out`` and prints the table and the verdicts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tether.launch import UsageError
from tether.launch.eval import EvalCommand
from tether.launch.report import wilson_interval


def load_run(path: Path) -> dict:
    """The eval.json of a run folder (or the file itself).

    Raises:
        FileNotFoundError: no eval.json there. UsageError: the file is not a tether eval result.
    """
    file = path / "eval.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no eval.json (pass an eval output folder or its eval.json)")
    try:
        results = json.loads(file.read_text())
        for r in results["tasks"].values():
            int(r["episodes"]), float(r["success_rate"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"{file} is not a tether eval result ({type(e).__name__}: {e})") from e
    return results


def successes(task_result: dict) -> int:
    """Successes of one task's result (older eval.json files have only the rate)."""
    if "successes" in task_result:
        return int(task_result["successes"])
    return round(task_result["success_rate"] * task_result["episodes"])


def two_proportion_test(s1: int, n1: int, s2: int, n2: int) -> tuple[float, str]:
    """Two-sided p-value that success rates s1/n1 and s2/n2 differ, and the test's name.

    Fisher's exact test (scipy) when scipy is installed, else a pooled two-proportion z-test
    (p = 1 when both rates are 0 or both 1, where it is undefined).
    """
    try:
        from scipy.stats import fisher_exact
    except ImportError:
        pooled = (s1 + s2) / (n1 + n2)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        if se == 0:
            return 1.0, "two-proportion z-test"
        z = (s1 / n1 - s2 / n2) / se
        return math.erfc(abs(z) / math.sqrt(2)), "two-proportion z-test"
    return float(fisher_exact([[s1, n1 - s1], [s2, n2 - s2]]).pvalue), "Fisher exact test"


def verdict(name: str, base: str, a: dict, b: dict, p: float, alpha: float, test: str) -> str:
    """One plain sentence on run ``name`` against the baseline ``base``."""
    ra, rb = a["successes"] / a["episodes"], b["successes"] / b["episodes"]
    facts = (f"{rb:.2f} ({b['successes']}/{b['episodes']}) vs {ra:.2f} ({a['successes']}/"
             f"{a['episodes']}), {test} p = {p:.3g}")
    if p < alpha:
        better = "better" if rb > ra else "worse"
        return f"{name} is significantly {better} than {base}: {facts} < {alpha}."
    return (f"no significant difference between {name} and {base}: {facts} >= {alpha}; "
            "the data do not tell them apart (more episodes would narrow the intervals).")


def compare(runs: list[tuple[str, dict]], alpha: float = 0.05) -> dict:
    """Compare every run with the first; returns the content of compare.json.

    Args:
        runs: (name, eval.json content) pairs; the first is the baseline.
        alpha: significance level of the two-sided test.

    Raises:
        UsageError: a run shares no task with the baseline.
    """
    base_name, base = runs[0]
    rows: dict[str, dict] = {}
    for name, results in runs:
        for task, r in results["tasks"].items():
            n, s = int(r["episodes"]), successes(r)
            rows.setdefault(task, {})[name] = {
                "successes": s, "episodes": n, "success_rate": s / n if n else float("nan"),
                "success_ci95": list(wilson_interval(s, n)),
            }
    comparisons = []
    for name, results in runs[1:]:
        common = [t for t in base["tasks"] if t in results["tasks"]]
        if not common:
            raise UsageError(f"{name} shares no task with {base_name}: nothing to compare")
        for task in common + ["overall"]:
            if task == "overall":
                a = {k: sum(rows[t][base_name][k] for t in common) for k in ("successes", "episodes")}
                b = {k: sum(rows[t][name][k] for t in common) for k in ("successes", "episodes")}
            else:
                a, b = rows[task][base_name], rows[task][name]
            if not a["episodes"] or not b["episodes"]:
                continue
            p, test = two_proportion_test(b["successes"], b["episodes"], a["successes"], a["episodes"])
            comparisons.append({
                "run": name, "baseline": base_name, "task": task,
                "baseline_rate": a["successes"] / a["episodes"],
                "rate": b["successes"] / b["episodes"],
                "difference": b["successes"] / b["episodes"] - a["successes"] / a["episodes"],
                "p_value": p, "test": test, "significant": p < alpha,
                "verdict": verdict(name, base_name, a, b, p, alpha, test),
            })
    for name, results in runs:
        s = sum(successes(r) for r in results["tasks"].values())
        n = sum(int(r["episodes"]) for r in results["tasks"].values())
        rows.setdefault("overall", {})[name] = {
            "successes": s, "episodes": n, "success_rate": s / n if n else float("nan"),
            "success_ci95": list(wilson_interval(s, n)),
        }
    return {"runs": [name for name, _ in runs], "baseline": base_name, "alpha": alpha,
            "table": rows, "comparisons": comparisons}


def plot_compare(result: dict, path: Path) -> Path:
    """Grouped bars: success rate per task and overall, one bar per run, 95% Wilson intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = list(result["table"])
    runs = result["runs"]
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups) * max(1, len(runs) / 2)), 4), dpi=110)
    for i, name in enumerate(runs):
        xs, rates, err = [], [], [[], []]
        for g, task in enumerate(groups):
            cell = result["table"][task].get(name)
            if cell is None or not cell["episodes"]:
                continue
            lo, hi = cell["success_ci95"]
            xs.append(g - 0.4 + width * (i + 0.5))
            rates.append(cell["success_rate"])
            err[0].append(max(0.0, cell["success_rate"] - lo))
            err[1].append(max(0.0, hi - cell["success_rate"]))
        ax.bar(xs, rates, width, yerr=err, capsize=4, label=name)
    for c in result["comparisons"]:
        if c["significant"]:
            g = groups.index(c["task"])
            ax.text(g - 0.4 + width * (runs.index(c["run"]) + 0.5), 1.0, "*", ha="center",
                    fontsize=14)
    ax.set_xticks(np.arange(len(groups)), groups, rotation=15)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("success rate (95% Wilson CI)")
    ax.set_title(f"success per task; * differs from {result['baseline']} (p < {result['alpha']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown(result: dict) -> str:
    """compare.md: the table (rate, interval, counts per run) and the verdicts."""
    runs = result["runs"]
    lines = ["# tether eval compare", "", f"Baseline: `{result['baseline']}`.", "",
             "| task | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for task, cells in result["table"].items():
        row = []
        for name in runs:
            c = cells.get(name)
            row.append("-" if c is None else f"{c['success_rate']:.2f} [{c['success_ci95'][0]:.2f}, "
                       f"{c['success_ci95'][1]:.2f}] ({c['successes']}/{c['episodes']})")
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    lines += ["", "Verdicts (two-sided, against the baseline; not corrected for multiple comparisons):", ""]
    lines += [f"- {c['task']}: {c['verdict']}" for c in result["comparisons"]]
    lines += ["", "![compare](compare.png)"]
    return "\n".join(lines) + "\n"


def run_names(paths: list[Path]) -> list[str]:
    """Short names for the runs: folder names, or the paths when those collide."""
    names = [(p.parent if p.name == "eval.json" else p).name for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def main(cmd: EvalCommand) -> dict:
    """Entry point of ``tether eval compare``: print the comparison table, write compare.md/png/json;
    returns the report."""
    from rich.console import Console
    from rich.table import Table

    paths = list(cmd.runs)
    runs = list(zip(run_names(paths), (load_run(p) for p in paths)))
    result = compare(runs, cmd.alpha)
    cmd.out.mkdir(parents=True, exist_ok=True)
    (cmd.out / "compare.json").write_text(json.dumps(result, indent=2))
    (cmd.out / "compare.md").write_text(markdown(result))
    plot_compare(result, cmd.out / "compare.png")
    table = Table(title="success rate [95% Wilson CI] (successes/episodes)")
    table.add_column("task")
    for name in result["runs"]:
        table.add_column(name)
    for task, cells in result["table"].items():
        table.add_row(task, *(
            "-" if (c := cells.get(n)) is None else
            f"{c['success_rate']:.2f} [{c['success_ci95'][0]:.2f}, {c['success_ci95'][1]:.2f}] "
            f"({c['successes']}/{c['episodes']})" for n in result["runs"]))
    console = Console()
    console.print(table)
    for c in result["comparisons"]:
        console.print(f"{c['task']}: {c['verdict']}", highlight=False)
    console.print(f"report: {cmd.out / 'compare.md'}", highlight=False)
    return result
