"""Training-side data: windows of (observation, action) pairs from a tether dataset, the
normalization statistics that travel with a policy, and task one-hot goals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tether.robot.dataset import Dataset

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


@dataclass
class WindowData:
    """All frames of a dataset as arrays, with the window index of every frame.

    Attributes:
        obs: (N, S) float32 ``observation.state``; actions: (N, A) float32.
        task_index: (N,) int64; tasks: the task strings, by index.
        windows: (N, T) int64 row indices of frames t-T+1..t, clamped to the episode's first frame.
    """

    obs: np.ndarray
    actions: np.ndarray
    task_index: np.ndarray
    tasks: list[str]
    windows: np.ndarray

    @classmethod
    def from_dataset(cls, root: Path | str, window: int) -> WindowData:
        """Read ``observation.state``, ``action`` and task of every frame of the dataset at ``root``.

        Raises:
            tether.robot.dataset.DatasetError: not a readable dataset.
        """
        ds = Dataset(root)
        frames = ds.frames(["observation.state", "action", "episode_index", "task_index", "frame_index"])
        obs = frames["observation.state"].astype(np.float32)
        actions = frames["action"].astype(np.float32)
        frame_index = frames["frame_index"].astype(np.int64)
        rows = np.arange(len(obs))
        first = rows - frame_index  # frames of an episode are contiguous and in order
        offsets = np.arange(-(window - 1), 1)
        windows = np.maximum(rows[:, None] + offsets[None, :], first[:, None])
        return cls(obs, actions, frames["task_index"].astype(np.int64), ds.tasks, windows)

    def batches(self, normalizer: Normalizer, batch_size: int, seed: int = 0):
        """A ``sample_batch(step)`` function for ``tether.policies.train.train``: random windows as
        ``{"obs": [B,T,S], "actions": [B,T,A], "goal": [B,G]}`` float32 tensors."""
        obs = torch.from_numpy(normalizer.obs(self.obs).astype(np.float32))
        actions = torch.from_numpy(normalizer.action(self.actions).astype(np.float32))
        goals = torch.eye(len(self.tasks))[torch.from_numpy(self.task_index)]
        windows = torch.from_numpy(self.windows)
        gen = torch.Generator().manual_seed(seed)

        def sample_batch(step: int) -> dict[str, torch.Tensor]:
            rows = torch.randint(len(windows), (batch_size,), generator=gen)
            w = windows[rows]
            return {"obs": obs[w], "actions": actions[w], "goal": goals[rows]}

        return sample_batch
