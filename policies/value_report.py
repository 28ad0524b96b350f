"""How well a goal-reaching value orders the frames of held-out episodes.

For each episode of T frames, V(s_t, g = s_{T-1}) for every t against minus the steps to go,
-(T - 1 - t): a value that knows how far the goal is ranks them alike, whatever its scale
(Spearman's rank correlation, ``scipy.stats.spearmanr``; 1 is a perfect ordering). ICVF's reward
(-1 a step, 0 at the goal) makes the ideal value -(1 - gamma^k) / (1 - gamma) at k steps to go,
which the curves plot next to the learned one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np


def _finite_or_none(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def value_curves(value: Callable, frames, batch_size: int = 256) -> list[np.ndarray]:
    """V(s_t, final frame) along every episode of ``frames`` (a ``FrameEpisodes``).

    Args:
        value: (obs uint8 [B, H, W, 3] tensor, goal [1, H, W, 3] tensor) -> [B] tensor, e.g.
            ``Icvf.value``.

    Returns:
        float64 [T_i] per episode.
    """
    import torch

    curves = []
    for episode in frames.episodes:
        # copies: a dataset's episodes are read-only memory maps, which torch will not wrap
        goal = torch.from_numpy(np.array(episode[-1:]))
        parts = [value(torch.from_numpy(np.array(episode[i:i + batch_size])), goal)
                 for i in range(0, len(episode), batch_size)]
        curves.append(torch.cat(parts).double().numpy())
    return curves


def spearman_report(curves: list[np.ndarray], names: list[str]) -> dict:
    """Spearman rho between V and -(steps to go) per episode, and their mean.

    Returns:
        ``{"episodes": [{"name", "length", "spearman", "v_first", "v_last"}], "mean_spearman"}``;
        rho is None where V is constant along an episode (undefined), and the mean skips those.
    """
    from scipy.stats import spearmanr

    rows = []
    for curve, name in zip(curves, names):
        to_go = np.arange(len(curve))[::-1]
        rho = float(spearmanr(curve, -to_go).statistic) if np.ptp(curve) > 0 else float("nan")
        rows.append({"name": name, "length": len(curve), "spearman": _finite_or_none(rho),
                     "v_first": float(curve[0]), "v_last": float(curve[-1])})
    rhos = [r["spearman"] for r in rows if r["spearman"] is not None]
    return {"episodes": rows, "mean_spearman": float(np.mean(rhos)) if rhos else None}


def plot_value_curves(curves: list[np.ndarray], names: list[str], path: Path, discount: float,
                      max_episodes: int = 4, title: str = "held-out episodes") -> Path:
    """PNG of V(s_t, final frame) against t for ``max_episodes`` episodes spread over the list
    (first to last), each with the ideal -(1 - gamma^k) / (1 - gamma), k steps to go, dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    shown = np.unique(np.linspace(0, len(curves) - 1, min(max_episodes, len(curves))).round().astype(int))
    for i, j in enumerate(shown):
        curve, name = curves[j], names[j]
        color = f"C{i}"
        k = np.arange(len(curve))[::-1]
        ax.plot(curve, color=color, label=name.rsplit("/", 1)[-1])
        ax.plot(-(1 - discount**k) / (1 - discount), color=color, linestyle="--", alpha=0.5)
    ax.set_xlabel("frame t")
    ax.set_ylabel("V(s_t, g = last frame)")
    ax.set_title(f"{title} (dashed: ideal)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
