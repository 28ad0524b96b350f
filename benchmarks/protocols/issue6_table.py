"""Issue 6 results table from runs6b/<task>/: label accuracy, reward model, success per variant."""
import json, sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs6b")
rows = []
print("| task | label acc. (20% flips) | RM held-out acc. vs truth | RM Spearman vs true reward | IQL, VLM-style labels | IQL, true reward | IQL, constant reward | BC | IQL-VLM / IQL-true | IQL-VLM − BC | IQL-VLM − const |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for task in sorted(p.name for p in root.iterdir() if p.is_dir()):
    d = root / task
    try:
        lab = json.loads((d / "label.json").read_text())
        rm = json.loads((d / "rm.json").read_text())
        sr = {v: json.loads((d / f"eval_{v}" / "eval.json").read_text()) for v in ("iql_vlm", "iql_true", "iql_const", "bc")}
    except FileNotFoundError:
        continue
    pc = {v: 100 * r["success_rate"] for v, r in sr.items()}
    ci = {v: r["success_ci95"] for v, r in sr.items()}
    cell = lambda v: f"{pc[v]:.0f}% [{100*ci[v][0]:.0f}, {100*ci[v][1]:.0f}]"
    ratio = pc["iql_vlm"] / pc["iql_true"] if pc["iql_true"] else float("nan")
    print(f"| {task} | {lab['accuracy']:.3f} | {rm['val_accuracy_true']:.3f} | {rm['spearman']['rho']:.3f} | "
          f"{cell('iql_vlm')} | {cell('iql_true')} | {cell('iql_const')} | {cell('bc')} | {ratio:.2f} | "
          f"{pc['iql_vlm'] - pc['bc']:+.0f} | {pc['iql_vlm'] - pc['iql_const']:+.0f} |")
