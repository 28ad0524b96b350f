"""The normalization statistics that travel with a policy (training batches are built in
``sequence_data.py`` and ``offline.py``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_STD = 1e-2
"""Floor of per-dimension scales, so constant dimensions (padding, fixed quaternions) stay finite."""


@dataclass
class Normalizer:
    """Observation z-scoring and action min-max scaling to [-1, 1].

    Attributes:
        obs_mean, obs_std: (S,) statistics of ``observation.state``.
        action_center, action_half_range: (A,) so that action = center + half_range * normalized.
    """

    obs_mean: np.ndarray
    obs_std: np.ndarray
    action_center: np.ndarray
    action_half_range: np.ndarray

    @classmethod
    def fit(cls, obs: np.ndarray, actions: np.ndarray) -> Normalizer:
        """Statistics of obs (N, S) and actions (N, A)."""
        lo, hi = actions.min(0), actions.max(0)
        return cls(
            obs.mean(0).astype(np.float32),
            np.maximum(obs.std(0), MIN_STD).astype(np.float32),
            ((hi + lo) / 2).astype(np.float32),
            np.maximum((hi - lo) / 2, MIN_STD).astype(np.float32),
        )

    def obs(self, x: np.ndarray) -> np.ndarray:
        """Z-scored observations, same shape as ``x`` [..., S]."""
        return (x - self.obs_mean) / self.obs_std

    def action(self, a: np.ndarray) -> np.ndarray:
        """Actions scaled to [-1, 1] over the data's range, same shape as ``a`` [..., A]."""
        return (a - self.action_center) / self.action_half_range

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        """Inverse of ``to_dict``."""
        f32 = np.float32
        return cls(
            np.asarray(d["observation.state"]["mean"], f32),
            np.asarray(d["observation.state"]["std"], f32),
            np.asarray(d["action"]["center"], f32),
            np.asarray(d["action"]["half_range"], f32),
        )

    def to_dict(self) -> dict:
        return {
            "observation.state": {"mean": self.obs_mean.tolist(), "std": self.obs_std.tolist()},
            "action": {
                "center": self.action_center.tolist(),
                "half_range": self.action_half_range.tolist(),
            },
        }
