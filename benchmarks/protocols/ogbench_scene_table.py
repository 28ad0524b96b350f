"""OGBench scene-play table (issue 5): success on OGBench scene's 5 goals for each evaluated policy, next to OGBench's
published scene-play-v0 numbers (Park et al., ICLR 2025, Table 2; their data is 1000 episodes and
1M gradient steps, ours is regenerated and smaller). ogbench_scene_play.sh runs it at its end; it reads
the eval_*/eval.json folders there and takes under a second (on 2 CPU cores (Intel Xeon @ 2.80 GHz, 24 GB, no GPU)).

    python ogbench_scene_table.py [EXPERIMENT_DIR]
"""
import json
import re
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
# eval folder eval_<policy>[_h<H>][_<variant>][_k<K>] -> what it is (ogbench_scene_play.sh names them
# so; _k<K> only tells apart evaluations of one chunk policy with different --action-steps;
# _ens: --chunk-blend ensemble; _det: --deterministic; a variant starting obj: goals restricted
# to the objects' state, GOAL_DIMS)
ARMS = {
    "beso": "BESO, 3 DDIM steps, w = 1",
    "beso_w1.5": "BESO with CFG, 3 steps, w = 1.5",
    "beso_w3": "BESO with CFG, 3 steps, w = 3",
    "beso_w5": "BESO with CFG, 3 steps, w = 5",
    "gcbc": "GCBC (same transformer)",
    "beso_steps1": "BESO, 1 step, w = 1",
    "beso_steps10": "BESO, 10 steps, w = 1",
    "beso_w0": "BESO, 3 steps, w = 0 (goal-free play policy)",
    "beso_ens": "BESO, 3 DDIM steps, w = 1",
    "gcbc_ens": "GCBC (same transformer)",
    "beso_w1.5_ens": "BESO with CFG, 3 steps, w = 1.5",
    "beso_det": "BESO, 3 DDIM steps, w = 1, zero initial noise (--deterministic)",
}
PUBLISHED = {"GCBC": "5 ± 1", "GCIVL": "42 ± 4", "GCIQL": "51 ± 4", "QRL": "5 ± 1", "CRL": "19 ± 2", "HIQL": "38 ± 3"}

print("| policy | episodes | success [95% CI] | task1 | task2 | task3 | task4 | task5 |")
print("|---|---|---|---|---|---|---|---|")
NAME = re.compile(r"eval_(beso|gcbc)(?:_h(\d+))?(?:_(?!k\d+$)(.+?))?(?:_k\d+)?$")


def arm(folder: Path) -> tuple[int, bool, str]:
    """(action horizon, whether goals are the objects' state only, key of ARMS) of an eval folder."""
    algo, horizon, variant = NAME.match(folder.name).groups()
    objects = variant is not None and (variant == "obj" or variant.startswith("obj_"))
    if objects:
        variant = variant[4:] or None
    return int(horizon or 1), objects, algo if variant is None else f"{algo}_{variant}"


def order(folder: Path) -> tuple:
    horizon, objects, key = arm(folder)
    return (horizon, objects, list(ARMS).index(key) if key in ARMS else len(ARMS), folder.name)


for folder in sorted((d for d in root.glob("eval_*") if NAME.match(d.name)), key=order):
    f = folder / "eval.json"
    if not f.exists():
        continue
    horizon, objects, key = arm(folder)
    r = json.loads(f.read_text())
    label = ARMS.get(key, folder.name)
    if objects:
        label += "; goals: the objects' state only"
    if horizon > 1:
        label += f"; chunks of {horizon}, {r['config']['action_steps']} run per call"
    if r["config"].get("chunk_blend") == "ensemble":
        label += f", temporal ensembling (m = {r['config']['chunk_ensemble_m']})"
    lo, hi = r["success_ci95"]
    tasks = " | ".join(f"{100 * r['tasks'][t]['success_rate']:.0f}%" for t in sorted(r["tasks"]))
    print(f"| {label} | {r['episodes']} | {100 * r['success_rate']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}] | {tasks} |")
print()
print("OGBench scene-play-v0, published (%, mean ± std over 8 seeds, 50 episodes per goal): "
      + ", ".join(f"{k} {v}" for k, v in PUBLISHED.items()))
