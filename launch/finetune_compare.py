"""``tether finetune compare RUN ... [--offline EVAL_DIR]``: fine-tuning runs side by side.

For each run folder (``tether finetune run`` / ``learner`` output: ``episodes.json``) the success
of its episodes against the online environment steps, smoothed over ``--window`` episodes: its
evaluation episodes' (the mean action, ``--eval-every``) where it has them, as WSRL and RLPD report,
else its training episodes' (the acting policy, exploration included). Then:

* ``initial_dip``: the lowest smoothed success in the first ``--dip-steps`` steps (WSRL's
  "initial dip", Zhou et al., ICLR 2025: how far fine-tuning first unlearns);
* ``steps_to``: the first step count at which the smoothed success reaches ``--target``;
* ``final``: success over the last ``--window`` episodes;
* ``updates`` and ``utd``: the learner's gradient updates and the update-to-data ratio it reached
  (from the last line of ``progress.jsonl``; a learner short of CPU falls below its setting).

The dip and the steps to target count full windows only (from the ``window``-th episode on): one
lucky or unlucky first episode is no success rate. ``curve`` says which episodes were scored.

``--offline`` adds the offline policy's ``tether eval`` result (``eval.json``) as a flat line.
Writes ``compare.json``, ``compare.md`` and ``compare.png`` (curves) under ``--out``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tether.launch import UsageError


@dataclass
class Curve:
    """A run's smoothed success (``success``, over ``window`` episodes) after ``steps`` online
    transitions, per episode."""

    name: str
    steps: np.ndarray
    success: np.ndarray
    window: int
    kind: str = "acting"
    """``evaluation`` (mean-action episodes) or ``acting`` (training episodes)."""


def success_curve(episodes: list[dict], window: int) -> tuple[np.ndarray, np.ndarray]:
    """(cumulative online transitions at each episode's end, success averaged over the last
    ``window`` episodes, fewer at the start), both [E]."""
    steps = np.array([float(e["transitions"]) for e in episodes])
    success = np.array([float(e["success"]) for e in episodes])
    csum = np.concatenate([[0.0], np.cumsum(success)])
    idx = np.arange(1, len(success) + 1)
    start = np.maximum(0, idx - window)
    return steps, (csum[idx] - csum[start]) / (idx - start)


def summarize(curve: Curve, dip_steps: float, target: float) -> dict:
    """``initial_dip``, ``steps_to`` (None if never reached), ``final`` and counts of one run."""
    full = np.arange(len(curve.success)) >= curve.window - 1
    early = curve.success[full & (curve.steps <= dip_steps)]
    reached = np.flatnonzero(full & (curve.success >= target))
    return {"episodes": int(len(curve.steps)), "steps": int(curve.steps[-1]) if len(curve.steps) else 0,
            "initial_dip": float(early.min()) if len(early) else None,
            "steps_to_target": int(curve.steps[reached[0]]) if len(reached) else None,
            "final": float(curve.success[-1]) if len(curve.success) else None, "curve": curve.kind}


def learner_totals(path: Path) -> dict:
    """``updates`` and achieved ``utd`` from a run folder's last ``progress.jsonl`` line (None
    without one: an actor-only folder)."""
    file = path / "progress.jsonl"
    lines = file.read_text().splitlines() if file.exists() else []
    last = json.loads(lines[-1]) if lines else {}
    return {"updates": last.get("updates"), "utd": last.get("utd")}


def load_run(path: Path, window: int) -> Curve:
    """A run folder's curve.

    Raises:
        UsageError: no ``episodes.json`` (the run has not finished) or no episode in it.
    """
    file = path / "episodes.json"
    if not file.exists():
        raise UsageError(f"{path} has no episodes.json (written when tether finetune ends)")
    episodes = json.loads(file.read_text())
    if not episodes:
        raise UsageError(f"{file} holds no episode")
    evaluations = [e for e in episodes if e.get("eval")]
    kind = "evaluation" if evaluations else "acting"
    steps, success = success_curve(evaluations or episodes, window)
    return Curve(path.name, steps, success, window, kind)


def compare(runs: list[Path], out: Path, offline: Path | None = None, window: int = 10,
            dip_steps: float = 10_000, target: float = 0.8) -> dict:
    """Run the comparison (see the module docstring); returns what ``compare.json`` holds.

    Raises:
        UsageError: no run, a run without episodes, an ``--offline`` folder without eval.json.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        raise UsageError("name at least one fine-tuning run folder")
    curves = [load_run(Path(r), window) for r in runs]
    result: dict = {"window": window, "dip_steps": dip_steps, "target": target,
                    "runs": {c.name: summarize(c, dip_steps, target) | learner_totals(Path(r))
                             for c, r in zip(curves, runs)}}
    if offline is not None:
        file = Path(offline) / "eval.json"
        if not file.exists():
            raise UsageError(f"--offline {offline}: no eval.json (write one with tether eval --out {offline})")
        evaluation = json.loads(file.read_text())
        result["offline"] = {"success": evaluation["success_rate"], "ci95": evaluation["success_ci95"],
                             "episodes": evaluation["episodes"]}
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for c in curves:
        ax.plot(c.steps, c.success, label=f"{c.name} ({c.kind})")
    if "offline" in result:
        ax.axhline(result["offline"]["success"], color="gray", linestyle="--", label="offline policy")
    ax.axvline(dip_steps, color="lightgray", linewidth=0.8)
    ax.set_xlabel("online environment steps")
    ax.set_ylabel(f"success (last {window} episodes)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "compare.png")
    plt.close(fig)
    (out / "compare.json").write_text(json.dumps(result, indent=2))
    (out / "compare.md").write_text(markdown(result))
    return result


def markdown(result: dict) -> str:
    """The comparison as a markdown table."""
    pct = lambda x: "n/a" if x is None else f"{100 * x:.0f}%"  # noqa: E731
    lines = [f"| run | episodes scored | online steps | initial dip (first {result['dip_steps']:.0f} steps) | "
             f"steps to {pct(result['target'])} | final (last {result['window']}) | updates | UTD reached |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in result["runs"].items():
        reached = "never" if r["steps_to_target"] is None else str(r["steps_to_target"])
        utd = "n/a" if r["utd"] is None else f"{r['utd']:.2f}"
        lines.append(f"| {name} | {r['episodes']} {r['curve']} | {r['steps']} | {pct(r['initial_dip'])} | {reached} | "
                     f"{pct(r['final'])} | {r['updates'] if r['updates'] is not None else 'n/a'} | {utd} |")
    if "offline" in result:
        o = result["offline"]
        lines.append(f"| offline policy (tether eval, {o['episodes']} episodes) | | | | | {pct(o['success'])} | | |")
    return "\n".join(lines) + "\n"
