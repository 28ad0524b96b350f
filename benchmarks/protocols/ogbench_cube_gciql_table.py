"""OGBench cube-single-play GCIQL table (issue 25): success on OGBench's 5 goals at every
checkpoint of every seed (the learning curve, 95% Wilson intervals), and the final checkpoint's
mean over seeds with a 95% t interval, next to OGBench's published cube-single-play-v0 numbers
(Park et al., ICLR 2025, Table 2: 1000 episodes, 1M steps, 8 seeds). ogbench_cube_gciql.sh runs
it at its end; it reads eval_s<SEED>_<STEP>/eval.json and takes under a second.

    python ogbench_cube_gciql_table.py [EXPERIMENT_DIR]
"""
import json
import re
import sys
from pathlib import Path

import numpy as np
from scipy import stats

root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
# the figure issue 25 quotes from OGBench's Table 2 (the other methods' were not re-checked here)
PUBLISHED = {"GCIQL": "68 ± 6"}
NAME = re.compile(r"eval_s(\d+)_(\d+)$")
runs: dict[int, dict[int, dict]] = {}
for folder in root.glob("eval_s*_*"):
    m = NAME.match(folder.name)
    if m and (folder / "eval.json").exists():
        runs.setdefault(int(m[1]), {})[int(m[2])] = json.loads((folder / "eval.json").read_text())

print("| seed | step | episodes | success [95% CI] | task1 | task2 | task3 | task4 | task5 |")
print("|---|---|---|---|---|---|---|---|---|")
finals = []
for seed in sorted(runs):
    for step in sorted(runs[seed]):
        r = runs[seed][step]
        lo, hi = r["success_ci95"]
        tasks = " | ".join(f"{100 * t['success_rate']:.0f}" for t in r["tasks"].values())
        print(f"| {seed} | {step} | {r['episodes']} | {r['pc_success']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}] | {tasks} |")
    finals.append(runs[seed][max(runs[seed])]["pc_success"])
if finals:
    mean = float(np.mean(finals))
    if len(finals) > 1:
        half = float(stats.t.ppf(0.975, len(finals) - 1) * np.std(finals, ddof=1) / np.sqrt(len(finals)))
        print(f"\nGCIQL, last checkpoint, {len(finals)} seeds: {mean:.1f}% ± {half:.1f} (95% t interval over seeds)")
    else:
        print(f"\nGCIQL, last checkpoint, 1 seed: {mean:.1f}% (no interval over seeds with one seed)")
print("\nOGBench cube-single-play-v0, published (8 seeds): " + ", ".join(f"{k} {v}" for k, v in PUBLISHED.items()))
