"""Training batches for the goal-conditioned sequence policies (BESO, GCBC).

A sample at frame t holds the observation window t-T+1..t, the actions t-T+1..t+H-1 (the window's
and the chunk's, H = action horizon), which of those actions lie outside the episode (padded,
left out of the loss), and a goal: the one-hot of the episode's task, or a later observation of
the same episode (hindsight goal relabelling for play data: Lynch et al., "Learning Latent Plans
from Play", CoRL 2019; the windows follow LeRobot's ``delta_timestamps``). Frames come from
``tether.policies.sampling.TrainingDataset``; camera frames (visuomotor policies) from its
decoded-video cache (``tether.robot.dataset.cache.VideoCache``), so training never waits on video
decoding after the first pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tether.policies.configs import GoalConfig, ObservationConfig
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
        cameras: camera keys a visuomotor policy reads (empty: state only), camera_shapes: their
            frame shapes (H, W, 3); goal_camera: the camera of image goals (else None);
        task_embeddings: language goals: float32 [tasks, E] (else None); multimodal goals have
            both these and a goal camera.
    """

    data: TrainingDataset
    normalizer: Normalizer
    goal: GoalConfig
    goal_dims: tuple[int, ...] | None
    tasks: list[str]
    window: int
    horizon: int
    cameras: tuple[str, ...] = ()
    camera_shapes: dict | None = None
    goal_camera: str | None = None
    task_embeddings: np.ndarray | None = None

    @classmethod
    def from_dataset(cls, root: Path | str, window: int, horizon: int, goal: GoalConfig,
                     observation: ObservationConfig | None = None,
                     cache_dir: Path | str | None = None) -> SequenceData:
        """Read ``observation.state`` and ``action`` of every frame of the dataset at ``root``
        (and open the decoded-video cache of the cameras ``observation`` reads).

        Raises:
            tether.robot.dataset.DatasetError: not a readable dataset; a camera the dataset lacks
                (naming ``--obs.cameras`` and the dataset's cameras); language goals on a dataset
                with an empty task string.
            ValueError: hindsight offsets out of order, gamma outside (0, 1), goal dims outside
                the state, an image goal without a camera.
        """
        from tether.robot.dataset import Dataset, DatasetError
        from tether.policies.visuomotor import camera_key

        observation = observation or ObservationConfig()
        ds = Dataset(root)
        cameras = tuple(camera_key(c) for c in observation.cameras)
        missing = [c for c in cameras if c not in ds.video_keys]
        if missing:
            raise DatasetError(f"--obs.cameras: {root} has no camera {', '.join(missing)} (its cameras: "
                               f"{', '.join(ds.video_keys) or 'none'})")
        goal_camera = None
        if goal.kind in ("image", "multimodal"):
            if not 0 <= goal.image_goal_prob <= 1:
                raise ValueError(f"--goal.image-goal-prob is {goal.image_goal_prob}, not a share in [0, 1]")
            if not cameras:
                raise ValueError(f"--goal.kind {goal.kind} encodes the goal frame with the policy's image "
                                 "encoder: give --obs.cameras")
            goal_camera = camera_key(goal.image_camera) if goal.image_camera else cameras[0]
            if goal_camera not in cameras:
                raise ValueError(f"--goal.image-camera {goal_camera} is not one of --obs.cameras {list(cameras)}")
        dt = 1.0 / ds.fps
        obs_offsets = [k * dt for k in range(-(window - 1), 1)]
        delta = {
            "observation.state": obs_offsets,
            "action": [k * dt for k in range(-(window - 1), horizon)],
            **{c: obs_offsets for c in cameras},
        }
        sampler, goal_keys = None, ("observation.state",)
        if goal.kind == "hindsight":
            lo, hi = round(goal.min_offset_s * ds.fps), round(goal.max_offset_s * ds.fps)
            sampler = GoalSampler(min_offset=max(1, lo), max_offset=max(1, lo, hi), gamma=goal.gamma)
        elif goal.kind in ("image", "multimodal"):
            # a demonstration's goal image is its last frame: an offset past every episode's end
            sampler, goal_keys = GoalSampler(min_offset=10**9, max_offset=10**9), (goal_camera,)
        data = TrainingDataset(ds, ["observation.state", "action", *cameras], delta, sampler,
                               goal_keys=goal_keys, cache=cache_dir)
        obs, actions = data.columns["observation.state"], data.columns["action"]
        state_dim = obs.shape[1]
        goal_dims = None
        if goal.kind == "hindsight":
            goal_dims = tuple(goal.dims) or tuple(range(state_dim))
            if min(goal_dims) < 0 or max(goal_dims) >= state_dim:
                raise ValueError(f"goal dims {goal_dims} outside observation.state ({state_dim} elements)")
        normalizer = Normalizer.fit(obs.astype(np.float32), actions.astype(np.float32))
        embeddings = None
        if goal.kind in ("language", "multimodal"):
            from tether.policies.language_goals import LanguageGoalError, text_embeddings

            try:
                embeddings = text_embeddings(list(ds.tasks), observation.clip_model, goal.text_weights)
            except LanguageGoalError as e:
                raise DatasetError(f"--goal.kind {goal.kind}: {root}'s task strings are the goals, and {e}") from None
        shapes = {c: tuple(ds.features[c]["shape"]) for c in cameras}
        return cls(data, normalizer, goal, goal_dims, list(ds.tasks), window, horizon, cameras,
                   shapes, goal_camera, embeddings)

    @property
    def obs_dim(self) -> int:
        return self.normalizer.obs_mean.shape[0]

    @property
    def action_dim(self) -> int:
        return self.normalizer.action_center.shape[0]

    @property
    def goal_dim(self) -> int:
        """G: the number of tasks, of goal state elements, or of a language embedding (image
        goals: 0, the policy encodes them)."""
        if self.task_embeddings is not None:
            return self.task_embeddings.shape[1]
        if self.goal_camera is not None:
            return 0
        return len(self.tasks) if self.goal_dims is None else len(self.goal_dims)

    def batch(self, rows: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Normalized tensors for the frames at ``rows`` [B]: ``obs`` [B,T,S], ``actions`` [B,L,A]
        (L = T + H - 1), ``action_pad`` bool [B,L], ``goal`` [B,G] (image goals: ``goal_image``
        uint8 [B,H,W,3]; multimodal goals: both, ``goal`` the language embedding); with cameras,
        ``frames``: camera key -> uint8 [B,T,H,W,3]."""
        s = self.data.get(rows, rng)
        n = self.normalizer
        out = {
            "obs": torch.from_numpy(n.obs(s["observation.state"]).astype(np.float32)),
            "actions": torch.from_numpy(n.action(s["action"]).astype(np.float32)),
            "action_pad": torch.from_numpy(s["action_is_pad"]),
        }
        if self.cameras:
            out["frames"] = {c: torch.from_numpy(s[c]) for c in self.cameras}
        if self.goal_camera is not None:
            out["goal_image"] = torch.from_numpy(s[f"goal.{self.goal_camera}"])
        if self.task_embeddings is not None:
            out["goal"] = torch.from_numpy(self.task_embeddings[s["task_index"]])
        elif self.goal_camera is None and self.goal_dims is None:
            out["goal"] = torch.eye(len(self.tasks))[torch.from_numpy(s["task_index"])]
        elif self.goal_camera is None:
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
