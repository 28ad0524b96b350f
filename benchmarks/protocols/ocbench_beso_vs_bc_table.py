"""OCBench BESO-against-BC table (issue 25): success of every arm (eval_<arm>_s<SEED>/eval.json),
over all tasks and per task: mean over training seeds with a 95% t interval, pooled successes, and
each BESO arm against GCBC and BC by Welch's t test over the seeds' success rates and Fisher's
exact test over the pooled episodes (scipy). ocbench_beso_vs_bc.sh runs it at its end; under a
second.

    python ocbench_beso_vs_bc_table.py [EXPERIMENT_DIR]
"""
import json
import re
import sys
from pathlib import Path

import numpy as np
from scipy import stats

root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
ARMS = {"beso": "BESO, 3 DDIM steps, w = 1", "beso_w3": "BESO with CFG, w = 3",
        "gcbc": "GCBC (same transformer, task one-hot)", "bc": "BC (MLP)"}
NAME = re.compile(r"eval_(.+)_s(\d+)$")
runs: dict[str, dict[int, dict]] = {}
for f in root.glob("eval_*_s*/eval.json"):
    m = NAME.match(f.parent.name)
    if m and m[1] in ARMS:
        runs.setdefault(m[1], {})[int(m[2])] = json.loads(f.read_text())


def scoped(result: dict, task: str | None) -> dict:
    return result if task is None else result["tasks"][task]


def rates(arm, task):
    return np.array([scoped(r, task)["success_rate"] for _, r in sorted(runs[arm].items())]) * 100


def pooled(arm, task):
    return (sum(scoped(r, task)["successes"] for r in runs[arm].values()),
            sum(scoped(r, task)["episodes"] for r in runs[arm].values()))


tasks = sorted({t for by_seed in runs.values() for r in by_seed.values() for t in r["tasks"]})
for task in (None, *tasks):
    print(f"\n### {'all tasks' if task is None else task}\n")
    print("| arm | seeds | per seed (%) | mean [95% t CI] | pooled successes |")
    print("|---|---|---|---|---|")
    for arm in (a for a in ARMS if a in runs):
        x = rates(arm, task)
        half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
        wins, n = pooled(arm, task)
        print(f"| {ARMS[arm]} | {len(x)} | {', '.join(f'{v:.0f}' for v in x)} | {x.mean():.1f} ± {half:.1f} | {wins}/{n} |")
    print()
    for arm in ("beso", "beso_w3"):
        for base in ("gcbc", "bc"):
            if arm in runs and base in runs:
                a, b = rates(arm, task), rates(base, task)
                t = stats.ttest_ind(a, b, equal_var=False) if min(len(a), len(b)) > 1 else None
                (wa, na), (wb, nb) = pooled(arm, task), pooled(base, task)
                p = stats.fisher_exact([[wa, na - wa], [wb, nb - wb]]).pvalue
                tp = f"{t.pvalue:.3f}" if t is not None and np.isfinite(t.pvalue) else "n/a"
                print(f"- {ARMS[arm]} vs {ARMS[base]}: {a.mean() - b.mean():+.1f} points; "
                      f"Welch t over seeds p = {tp}; Fisher over episodes p = {p:.3f}")
print("\nOCBench's published BC / flow-BC numbers: not tabulated (the paper, seohong.me/projects/ocbench, "
      "was not reachable from the machine that wrote this script).")
