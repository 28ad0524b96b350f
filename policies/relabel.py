"""Relabel a dataset's rewards with a learned reward model (RL-VLM-F's offline follow-up,
Venkataraman et al., 2024: fit the Bradley-Terry model on VLM preferences, write its reward into
the dataset, learn the policy with IQL).

The reward goes into a new float32 column ``reward.<name>`` (``next.reward`` stays as recorded);
see ``tether.robot.dataset.columns`` for the crash-safe write order. The value at row t is the
ensemble's score of frame t: the labels rank frames (``tether label`` reads a frame's true value
at its own row), so the relabelled column means what the labels meant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from tether.policies.reward_model import BradleyTerryEnsemble, score_dataset
from tether.robot.dataset import Dataset, VideoCache
from tether.robot.dataset.columns import add_column

PREFIX = "reward."


def reward_column(name: str) -> str:
    """``reward.<name>``; ``name`` may already carry the prefix."""
    return name if name.startswith(PREFIX) else PREFIX + name


def relabel(
    root: Path | str,
    model: BradleyTerryEnsemble,
    name: str,
    camera: str | None = None,
    cache: VideoCache | None = None,
    rewards: list[np.ndarray] | None = None,
    on_episode: Callable[[int], None] | None = None,
) -> tuple[Dataset, str]:
    """Score every frame with ``model`` and write the scores as ``reward.<name>``.

    Args:
        root: the dataset folder.
        model: the reward model (state or image input).
        name: column name, with or without the ``reward.`` prefix; an existing column of that
            name is replaced.
        camera: the camera an image model reads.
        rewards: per-episode scores already computed (e.g. by ``fit_reward_model``), to skip
            scoring again.
        on_episode: progress callback, called with each episode position scored.

    Returns:
        (the dataset reopened, the column name).

    Raises:
        tether.robot.dataset.DatasetError: not a dataset, no such camera;
        tether.robot.dataset.columns.ColumnError: see ``add_column``.
    """
    ds = Dataset(root)
    column = reward_column(name)
    if rewards is None:
        rewards = score_dataset(model, ds, camera, cache, on_episode)
    return add_column(root, column, rewards), column
