"""ICVF-initialized against randomly initialized image IQL (issue 7): the table of success (50 episodes)
per task, N, seed and init, the mean over seeds and the ICVF - random gap, from the runs/*/eval folders
icvf_image_iql.sh writes. Takes under a second on 2 CPU cores (Intel Xeon @ 2.80 GHz, 24 GB, no GPU)."""
import json
from pathlib import Path

rows = {}
for f in sorted(Path("runs").glob("*/eval/eval.json")):
    task, n, seed, init = f.parts[1].rsplit("_", 3)
    rows.setdefault((task, n), {}).setdefault(init, {})[seed] = json.loads(f.read_text())["success_rate"]
print("| task | N | ICVF init: seeds 0, 1, 2 | mean | random init: seeds 0, 1, 2 | mean | ICVF − random |")
print("|---|---|---|---|---|---|---|")
for (task, n), inits in sorted(rows.items(), key=lambda kv: (kv[0][0], int(kv[0][1][1:]))):
    cells, means = [], {}
    for init in ("icvf", "random"):
        s = inits.get(init, {})
        vals = [s.get(f"s{k}") for k in range(3)]
        done = [v for v in vals if v is not None]
        means[init] = sum(done) / len(done) if done else None
        cells += [", ".join("–" if v is None else f"{100 * v:.0f}%" for v in vals),
                  "–" if means[init] is None else f"{100 * means[init]:.0f}%"]
    diff = "–" if None in means.values() else f"{100 * (means['icvf'] - means['random']):+.0f}"
    print(f"| {task} | {n[1:]} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | {diff} |")
