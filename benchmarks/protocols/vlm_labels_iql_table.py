"""VLM-style labels -> reward model -> IQL results table (issue 6), from runs6b/<task>/: label
accuracy, reward model accuracy and Spearman against the true reward, success per arm (IQL on the
learned / true / constant reward, BC) and the target's ratio and margins. Takes under a second on
2 CPU cores (Intel Xeon @ 2.80 GHz, 24 GB, no GPU).

Seed 0 of an arm is eval_<arm>/ (vlm_labels_iql.sh), seed k is eval_<arm>_s<k>/ (vlm_labels_iql_seeds.sh). Each
arm's cell is the mean success over its seeds, with every seed's success in brackets.
"""
import json
import sys
from pathlib import Path

ARMS = ("iql_vlm", "iql_true", "iql_const", "bc")
root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs6b")


def seeds(d: Path, arm: str) -> list[float]:
    evals = [d / f"eval_{arm}"] + sorted(d.glob(f"eval_{arm}_s[0-9]*"))
    return [100 * json.loads((e / "eval.json").read_text())["success_rate"] for e in evals if (e / "eval.json").exists()]


print("| task | label acc. (20% flips) | RM held-out acc. vs truth | RM Spearman vs true reward | IQL, VLM-style labels "
      "| IQL, true reward | IQL, constant reward | BC | IQL-VLM / IQL-true | IQL-VLM − BC | IQL-VLM − const |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for task in sorted(p.name for p in root.iterdir() if p.is_dir()):
    d = root / task
    if not (d / "label.json").exists() or not (d / "rm.json").exists():
        continue
    lab = json.loads((d / "label.json").read_text())
    rm = json.loads((d / "rm.json").read_text())
    runs = {arm: seeds(d, arm) for arm in ARMS}
    if not all(runs.values()):
        continue
    mean = {arm: sum(v) / len(v) for arm, v in runs.items()}
    cell = lambda arm: f"{mean[arm]:.0f}% ({', '.join(f'{v:.0f}' for v in runs[arm])})"
    ratio = mean["iql_vlm"] / mean["iql_true"] if mean["iql_true"] else float("nan")
    print(f"| {task} | {lab['accuracy']:.3f} | {rm['val_accuracy_true']:.3f} | {rm['spearman']['rho']:.3f} | "
          f"{cell('iql_vlm')} | {cell('iql_true')} | {cell('iql_const')} | {cell('bc')} | {ratio:.2f} | "
          f"{mean['iql_vlm'] - mean['bc']:+.0f} | {mean['iql_vlm'] - mean['iql_const']:+.0f} |")
