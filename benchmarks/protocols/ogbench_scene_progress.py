"""Success on OGBench scene against training steps (issue 5), one line per policy, from evaluations
of checkpoints taken while the models trained (``checkpoints/policy.pt``, exported and evaluated
with ``tether eval``). Measures whether a model still improves when its training stops. The script
itself takes seconds; each point is a ``tether eval --sim ogbench:scene --episodes 20`` (100 episodes)
of an exported checkpoint, 333 to 430 s on one core of 2 CPU cores (Intel Xeon @ 2.80 GHz, 24 GB, no GPU).

    python ogbench_scene_progress.py OUT.png LABEL=STEP:EVAL_DIR[,STEP:EVAL_DIR...] [LABEL=...]

e.g. ``GCBC=65000:mid/eval_gcbc,300000:full/eval_gcbc``. Prints the table and writes the plot
(success with its 95% Wilson interval, in %, against gradient steps).
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out, specs = Path(sys.argv[1]), sys.argv[2:]
if not specs:
    sys.exit(__doc__)
fig, ax = plt.subplots(figsize=(7, 4))
print("| policy | steps | episodes | success [95% CI] |")
print("|---|---|---|---|")
for spec in specs:
    label, points = spec.rsplit("=", 1)  # a label may hold "=" ("BESO, w = 3")
    rows = []
    for point in points.split(","):
        step, folder = point.split(":", 1)
        r = json.loads((Path(folder) / "eval.json").read_text())
        rows.append((int(step), 100 * r["success_rate"], *(100 * x for x in r["success_ci95"]), r["episodes"]))
    rows.sort()
    for step, rate, lo, hi, n in rows:
        print(f"| {label} | {step:,} | {n} | {rate:.0f}% [{lo:.0f}, {hi:.0f}] |")
    steps, rate, lo, hi, _ = zip(*rows)
    line, = ax.plot(steps, rate, marker="o", label=label)
    ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15)
ax.set_xlabel("gradient steps")
ax.set_ylabel("success on OGBench scene's 5 goals (%, 95% CI)")
ax.set_xlim(0, None)
ax.set_ylim(0, None)
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(out, dpi=120)
print(f"\nwrote {out}")
