"""Timestamped action chunks executed on the server's time grid.

A policy that runs slower than the control loop sends a chunk: K actions meant for times
``t0 + k * dt`` on the server's clock (``time.monotonic()`` of the server, which clients read
from the ``t`` of its state messages, so no clock synchronisation is needed). At every tick the
scheduler returns the action for the tick's time:

* interpolation: linear between the chunk's samples (the policy rate -> the control rate), or the
  last sample at or before the tick (zero-order hold);
* expiry: samples whose time has passed are never executed; a chunk that ended is dropped;
* blending of overlapping chunks: ``latest`` uses the newest chunk that covers the tick (as
  Diffusion Policy's real-robot scheduler), ``ensemble`` averages every covering chunk with the
  weights exp(-m * i), i = 0 for the oldest (temporal ensembling, Zhao et al., ACT, RSS 2023).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass
class ActionChunk:
    """K actions [K, A] for the times t0 + k * dt (s, server clock)."""

    actions: np.ndarray
    t0: float
    dt: float

    @property
    def end(self) -> float:
        return self.t0 + (len(self.actions) - 1) * self.dt

    def at(self, t: float, interpolate: bool = True) -> np.ndarray | None:
        """The action for time ``t``; None before the first sample or after the last."""
        if t < self.t0 - 1e-9 or t > self.end + 1e-9:
            return None
        x = (t - self.t0) / self.dt if self.dt > 0 else 0.0
        k = min(int(np.floor(x + 1e-9)), len(self.actions) - 1)
        if not interpolate or k == len(self.actions) - 1:
            return self.actions[k]
        w = x - k
        return ((1 - w) * self.actions[k] + w * self.actions[k + 1]).astype(self.actions.dtype)


@dataclass
class ChunkScheduler:
    """Holds the chunks in flight and blends them into one action per tick.

    Args:
        blend: ``latest`` or ``ensemble`` (see module docstring).
        ensemble_m: m of the ensemble weights exp(-m * i).
        interpolate: linear interpolation between samples (else zero-order hold).
    """

    blend: Literal["latest", "ensemble"] = "latest"
    ensemble_m: float = 0.1
    interpolate: bool = True
    chunks: list[ActionChunk] = field(default_factory=list)

    def add(self, chunk: ActionChunk) -> None:
        self.chunks.append(chunk)

    def clear(self) -> None:
        self.chunks.clear()

    def action_at(self, t: float) -> np.ndarray | None:
        """The action for the tick at time ``t`` (s), or None when no chunk covers it.
        Chunks that ended before ``t`` are dropped."""
        self.chunks = [c for c in self.chunks if c.end >= t - 1e-9]
        covering = [a for c in self.chunks if (a := c.at(t, self.interpolate)) is not None]
        if not covering:
            return None
        if self.blend == "latest":
            return covering[-1]
        weights = np.exp(-self.ensemble_m * np.arange(len(covering)))
        blended = np.tensordot(weights / weights.sum(), np.stack(covering), axes=1)
        return blended.astype(covering[0].dtype)
