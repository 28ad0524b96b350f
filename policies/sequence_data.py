"""Training batches for the goal-conditioned sequence policies (BESO, GCBC).

A sample at frame t holds the observation window t-T+1..t, the actions t-T+1..t+H-1 (the window's
and the chunk's, H = action horizon), which of those actions lie outside the episode (padded,
left out of the loss), and a goal: the one-hot of the episode's task, or a later observation of
the same episode (hindsight goal relabelling for play data: Lynch et al., "Learning Latent Plans
from Play", CoRL 2019; the windows follow LeRobot's ``delta_timestamps``). Frames come from
``tether.policies.sampling.TrainingDataset``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tether.policies.configs import GoalConfig
from tether.policies.data import Normalizer
from tether.policies.sampling import GoalSampler, TrainingDataset


@dataclass
class SequenceData:
    """A dataset prepared for BESO/GCBC training.

    Attributes:
        data: the ``TrainingDataset`` (state and action columns in memory).
        normalizer: statistics of every frame's ``observation.state`` and ``action``.
        goal: the goal settings; goal_dims: for hindsight goals, the state elements used.
        tasks: the dataset's task strings (task goals index them).
        window, horizon: T and H.
    """

    data: TrainingDataset
    normalizer: Normalizer
    goal: GoalConfig
    goal_dims: tuple[int, ...] | None
    tasks: list[str]
    window: int
    horizon: int

    @classmethod
    def from_dataset(cls, root: Path | str, window: int, horizon: int, goal: GoalConfig) -> SequenceData:
        """Read ``observation.state`` and ``action`` of every frame of the dataset at ``root``.

        Raises:
            tether.robot.dataset.DatasetError: not a readable dataset.
            ValueError: hindsight offsets out of order, gamma outside (0, 1), or goal dims
                outside the state.
        """
        from tether.robot.dataset import Dataset

        ds = Dataset(root)
        dt = 1.0 / ds.fps
        delta = {
            "observation.state": [k * dt for k in range(-(window - 1), 1)],
            "action": [k * dt for k in range(-(window - 1), horizon)],
        }
        sampler = None
        if goal.kind == "hindsight":
            lo, hi = round(goal.min_offset_s * ds.fps), round(goal.max_offset_s * ds.fps)
            sampler = GoalSampler(min_offset=max(1, lo), max_offset=max(1, lo, hi), gamma=goal.gamma)
        data = TrainingDataset(ds, ["observation.state", "action"], delta, sampler)
        obs, actions = data.columns["observation.state"], data.columns["action"]
        state_dim = obs.shape[1]
        goal_dims = None
        if goal.kind == "hindsight":
            goal_dims = tuple(goal.dims) or tuple(range(state_dim))
            if min(goal_dims) < 0 or max(goal_dims) >= state_dim:
                raise ValueError(f"goal dims {goal_dims} outside observation.state ({state_dim} elements)")
        normalizer = Normalizer.fit(obs.astype(np.float32), actions.astype(np.float32))
        return cls(data, normalizer, goal, goal_dims, list(ds.tasks), window, horizon)

    @property
    def obs_dim(self) -> int:
        return self.normalizer.obs_mean.shape[0]

    @property
    def action_dim(self) -> int:
        return self.normalizer.action_center.shape[0]

    @property
    def goal_dim(self) -> int:
        """G: the number of tasks, or of goal state elements."""
        return len(self.tasks) if self.goal_dims is None else len(self.goal_dims)

    def batch(self, rows: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Normalized tensors for the frames at ``rows`` [B]: ``obs`` [B,T,S], ``actions`` [B,L,A]
        (L = T + H - 1), ``action_pad`` bool [B,L], ``goal`` [B,G]."""
        s = self.data.get(rows, rng)
        n = self.normalizer
        out = {
            "obs": torch.from_numpy(n.obs(s["observation.state"]).astype(np.float32)),
            "actions": torch.from_numpy(n.action(s["action"]).astype(np.float32)),
            "action_pad": torch.from_numpy(s["action_is_pad"]),
        }
        if self.goal_dims is None:
            out["goal"] = torch.eye(len(self.tasks))[torch.from_numpy(s["task_index"])]
        else:
            dims = list(self.goal_dims)
            g = (s["goal.observation.state"][:, dims] - n.obs_mean[dims]) / n.obs_std[dims]
            out["goal"] = torch.from_numpy(g.astype(np.float32))
        return out

    def batches(self, batch_size: int, seed: int = 0):
        """A ``sample_batch(step)`` function for ``tether.policies.train.train``: frames and goals
        from ``batch_rng(seed, step)`` (each data-parallel process draws its own batches)."""
        from tether.policies.train import batch_rng

        def sample_batch(step: int) -> dict[str, torch.Tensor]:
            rng = batch_rng(seed, step)
            return self.batch(rng.integers(0, len(self.data), batch_size), rng)

        return sample_batch
