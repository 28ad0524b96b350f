"""Training samples from a dataset: windows by timestamp offsets, hindsight goals, fast batches.

- :func:`delta_indices` and :func:`window_indices` follow LeRobot's ``delta_timestamps``
  (``LeRobotDataset(delta_timestamps=...)``, ``datasets/utils.py: check_delta_timestamps,
  get_delta_indices`` and ``lerobot_dataset.py: _get_query_indices``): offsets in seconds become
  frame offsets, indices outside the episode are clamped to its first/last frame and flagged in
  ``<key>_is_pad``. Observation history is negative offsets, an action chunk positive ones.
- :class:`GoalSampler` relabels frames of play data with goals reached later in the same episode
  (hindsight goal relabelling, Play-LMP: Lynch et al., "Learning Latent Plans from Play", CoRL
  2019, goals are the last frame of windows of 32-64 frames at 30 Hz), optionally mixed with the
  current frame and random frames as in ICVF (Ghosh et al. 2023, used by V-PTR: 30% random,
  50% future, 20% current).
- :class:`TrainingDataset` holds the low-dimensional columns in memory and reads camera frames
  through :class:`~tether.robot.dataset.cache.VideoCache`, with a torch-``Dataset``-compatible
  ``__len__``/``__getitem__`` and a vectorized ``sample(batch_size, rng)``.

numpy only: the arrays go to torch through ``torch.from_numpy`` or the DataLoader's default collate.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from tether.robot.dataset import Dataset
from tether.robot.dataset.cache import VideoCache

TOLERANCE_S = 1e-4
"""LeRobot's default ``tolerance_s``: how far an offset may be from a multiple of 1/fps."""

BOOKKEEPING = ("index", "episode_index", "frame_index", "timestamp", "task_index")
"""Columns every sample carries (LeRobot's default features)."""


def delta_indices(
    delta_timestamps: Mapping[str, Sequence[float]], fps: float, tolerance_s: float = TOLERANCE_S
) -> dict[str, np.ndarray]:
    """Time offsets (s) per key -> frame offsets per key, as LeRobot's ``get_delta_indices``.

    Args:
        delta_timestamps: key -> offsets in seconds relative to the sampled frame, e.g.
            ``{"observation.state": [-0.1, 0.0], "action": [0.0, 0.1, 0.2]}`` at 10 fps.
        fps: the dataset's frame rate (Hz).
        tolerance_s: largest distance (s) of an offset from a multiple of 1/fps.

    Returns:
        key -> int64 [K] frame offsets, ``round(offset * fps)``.

    Raises:
        ValueError: an offset is not a multiple of 1/fps within ``tolerance_s`` (the message lists
            them all), a key has no offsets, or fps <= 0.
    """
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    out, bad = {}, {}
    for key, offsets in delta_timestamps.items():
        ts = np.asarray(offsets, dtype=np.float64).reshape(-1)
        if ts.size == 0:
            raise ValueError(f"delta_timestamps[{key!r}] is empty")
        frames = np.round(ts * fps)
        off_grid = np.abs(ts * fps - frames) / fps > tolerance_s
        if off_grid.any():
            bad[key] = ts[off_grid].tolist()
        out[key] = frames.astype(np.int64)
    if bad:
        raise ValueError(
            f"delta_timestamps must be multiples of 1/fps = {1 / fps:.6g} s (within {tolerance_s} s); "
            f"these are not: {bad}"
        )
    return out


def window_indices(
    rows: np.ndarray, episode_start: np.ndarray, episode_end: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a window around each sampled row, clamped to its episode (LeRobot's padding).

    Args:
        rows: [B] row of each sample.
        episode_start, episode_end: [B] first row and one past the last row of its episode.
        offsets: [K] frame offsets (from :func:`delta_indices`).

    Returns:
        (indices, is_pad): int64 [B, K] rows, each within [start, end); bool [B, K], True where
        ``row + offset`` fell outside the episode and the first or last frame stands in for it.
    """
    rows = np.asarray(rows, dtype=np.int64)[:, None]
    start = np.asarray(episode_start, dtype=np.int64)[:, None]
    end = np.asarray(episode_end, dtype=np.int64)[:, None]
    wanted = rows + np.asarray(offsets, dtype=np.int64)[None, :]
    return np.clip(wanted, start, end - 1), (wanted < start) | (wanted >= end)


@dataclass
class GoalSampler:
    """Where the goal frame of a sample comes from (hindsight goal relabelling).

    With probability ``p_future`` a frame later in the same episode, offset by ``min_offset`` to
    ``max_offset`` frames (uniform, as Play-LMP's windows; or ``min_offset - 1 + Geometric(1 -
    gamma)`` when ``gamma`` is set, as in goal-conditioned RL with discount ``gamma``), clamped
    to the episode's last frame; with ``p_current`` the frame itself; with ``p_random`` any frame
    of the dataset. Probabilities must sum to 1.

    Attributes:
        p_future, p_current, p_random: mixture weights.
        min_offset: smallest future offset (frames, >= 0). Frames with fewer frames left get the
            episode's last frame.
        max_offset: largest future offset (frames), or None for the end of the episode.
        gamma: None for uniform offsets, else the discount of geometric offsets (0 < gamma < 1).
    """

    p_future: float = 1.0
    p_current: float = 0.0
    p_random: float = 0.0
    min_offset: int = 1
    max_offset: int | None = None
    gamma: float | None = None

    def __post_init__(self):
        p = (self.p_future, self.p_current, self.p_random)
        if min(p) < 0 or abs(sum(p) - 1) > 1e-6:
            raise ValueError(f"goal probabilities must be >= 0 and sum to 1, got {p}")
        if self.min_offset < 0 or (self.max_offset is not None and self.max_offset < self.min_offset):
            raise ValueError(f"need 0 <= min_offset <= max_offset, got {self.min_offset}, {self.max_offset}")
        if self.gamma is not None and not 0 < self.gamma < 1:
            raise ValueError(f"gamma must be in (0, 1), got {self.gamma}")

    @classmethod
    def play_lmp(cls, fps: float = 30.0) -> GoalSampler:
        """Play-LMP's goals: the last frame of a window of 32 to 64 frames at 30 Hz (about 1 to
        2 s), i.e. 31 to 63 frames ahead at 30 Hz, scaled to ``fps``."""
        return cls(min_offset=max(1, round(31 * fps / 30)), max_offset=max(1, round(63 * fps / 30)))

    @classmethod
    def icvf(cls, gamma: float = 0.99) -> GoalSampler:
        """ICVF's goal mix (V-PTR): 30% random, 50% future (geometric with ``gamma``), 20% current."""
        return cls(p_future=0.5, p_current=0.2, p_random=0.3, min_offset=1, gamma=gamma)

    def sample(
        self, rows: np.ndarray, episode_start: np.ndarray, episode_end: np.ndarray, num_rows: int,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Goal rows for the samples at ``rows``.

        Args:
            rows, episode_start, episode_end: [B] as in :func:`window_indices`.
            num_rows: rows in the dataset (random goals are drawn from all of them).
            rng: the random generator.

        Returns:
            int64 [B] goal rows: future and current goals lie in [row, episode_end).
        """
        rows = np.asarray(rows, dtype=np.int64)
        last = np.asarray(episode_end, dtype=np.int64) - 1
        b = len(rows)
        if self.gamma is None:
            hi = last - rows if self.max_offset is None else np.minimum(last - rows, self.max_offset)
            hi = np.maximum(hi, self.min_offset)  # fewer frames left than min_offset: clamped below
            offsets = self.min_offset + np.floor(rng.random(b) * (hi - self.min_offset + 1)).astype(np.int64)
        else:
            offsets = self.min_offset - 1 + rng.geometric(1 - self.gamma, b)
            if self.max_offset is not None:
                offsets = np.minimum(offsets, self.max_offset)
        goals = np.minimum(rows + offsets, last)
        if self.p_future < 1:
            kind = rng.choice(3, size=b, p=[self.p_future, self.p_current, self.p_random])
            goals = np.where(kind == 1, rows, goals)
            goals = np.where(kind == 2, rng.integers(0, num_rows, b), goals)
        return goals


class TrainingDataset:
    """Random-access training samples of a dataset, with windows, goals and camera frames.

    Low-dimensional features are read once into memory; camera frames are decoded once into a
    :class:`VideoCache` and read from memory maps.

    Args:
        dataset: a :class:`~tether.robot.dataset.Dataset` or its folder (tether or LeRobot v3.0).
        keys: features to return; default every feature (videos included).
        delta_timestamps: key -> offsets (s) for windows, as in LeRobot; keys without are single
            frames. E.g. ``{"observation.state": [-0.1, 0.0], "action": [0.0, 0.1, 0.2, 0.3]}``.
        goals: a :class:`GoalSampler` to relabel samples with goals, or None.
        goal_keys: features returned for the goal frame, as ``goal.<key>``.
        episodes: positions in ``dataset.episodes`` to use (a train or validation split); all by
            default.
        cache: the :class:`VideoCache` for camera frames, or a cache folder; default
            ``VideoCache(dataset)`` (see ``tether.robot.dataset.cache`` for where it lives).
        tolerance_s: see :func:`delta_indices`.

    A sample (``ds[i]``; ``sample`` adds a leading batch dimension B) is a dict of numpy arrays:
        ``<key>``: [...] the feature at the frame, or [K, ...] for a key with K offsets;
        ``<key>_is_pad``: bool [K] for windowed keys, True where the frame lay outside the episode;
        camera keys: uint8 [(K,) H, W, 3] RGB (not LeRobot's float [C, H, W]: converting on the
        GPU is cheaper than moving 4x the bytes);
        ``goal.<key>``: the goal frame's feature, and ``goal_offset``: int64 frames from the frame
        to the goal (-1 for a goal in another episode);
        ``index``, ``episode_index``, ``frame_index``, ``timestamp``, ``task_index``.

    Raises:
        ValueError: unknown keys, offsets off the frame grid (see :func:`delta_indices`).
        tether.robot.dataset.DatasetError: an unreadable dataset.
    """

    def __init__(
        self,
        dataset: Dataset | Path | str,
        keys: Sequence[str] | None = None,
        delta_timestamps: Mapping[str, Sequence[float]] | None = None,
        goals: GoalSampler | None = None,
        goal_keys: Sequence[str] = ("observation.state",),
        episodes: Iterable[int] | None = None,
        cache: VideoCache | Path | str | None = None,
        tolerance_s: float = TOLERANCE_S,
    ):
        self.dataset = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
        ds = self.dataset
        features = [k for k in ds.features if k not in BOOKKEEPING]
        self.keys = list(keys) if keys is not None else features
        self.goals = goals
        self.goal_keys = list(goal_keys) if goals is not None else []
        unknown = sorted(set(self.keys + self.goal_keys) - set(features))
        if unknown:
            raise ValueError(f"unknown features {unknown}; the dataset has {features}")
        self.delta = delta_indices(delta_timestamps or {}, ds.fps, tolerance_s)
        if set(self.delta) - set(self.keys):
            raise ValueError(f"delta_timestamps for keys not requested: {sorted(set(self.delta) - set(self.keys))}")
        self.video_keys = [k for k in dict.fromkeys(self.keys + self.goal_keys) if k in ds.video_keys]
        columns = [k for k in dict.fromkeys(self.keys + self.goal_keys) if k not in ds.video_keys]
        self.episode_ids = np.array(list(episodes) if episodes is not None else range(len(ds)), np.int64)
        parts = [ds.episode(int(e), [*columns, *BOOKKEEPING]) for e in self.episode_ids]
        self.columns = {c: np.concatenate([p[c] for p in parts]) for c in [*columns, *BOOKKEEPING]}
        lengths = np.array([len(p["index"]) for p in parts], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        # row -> position of its episode in episode_ids, and the episode's row range
        self.row_episode = np.repeat(np.arange(len(lengths)), lengths)
        self.episode_start = np.repeat(starts, lengths)
        self.episode_end = self.episode_start + np.repeat(lengths, lengths)
        self.tasks = ds.tasks
        if self.video_keys:
            self.cache = cache if isinstance(cache, VideoCache) else VideoCache(ds, cache_dir=cache)
        else:
            self.cache = None

    def __len__(self) -> int:
        return len(self.row_episode)

    def warm(self) -> None:
        """Decode every camera episode this dataset uses into the cache (before forking workers)."""
        if self.cache is not None:
            self.cache.warm(self.video_keys, self.episode_ids.tolist())

    def _gather(self, key: str, rows: np.ndarray) -> np.ndarray:
        """Feature ``key`` at ``rows`` (any shape): [*rows.shape, ...]."""
        if key not in self.video_keys:
            return self.columns[key][rows]
        flat = rows.reshape(-1)
        eps = self.row_episode[flat]
        local = flat - self.episode_start[flat]
        first = self.cache.frames(key, int(self.episode_ids[eps[0]]), local[:1])
        out = np.empty((len(flat), *first.shape[1:]), np.uint8)
        for e in np.unique(eps):
            m = eps == e
            out[m] = self.cache.frames(key, int(self.episode_ids[e]), local[m])
        return out.reshape(*rows.shape, *out.shape[1:])

    def get(self, rows: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Samples at ``rows`` (int [B], positions in this dataset): the dict described in the
        class docstring with a leading dimension B."""
        rows = np.asarray(rows, dtype=np.int64)
        start, end = self.episode_start[rows], self.episode_end[rows]
        out = {c: self.columns[c][rows] for c in BOOKKEEPING}
        for key in self.keys:
            if key in self.delta:
                idx, pad = window_indices(rows, start, end, self.delta[key])
                out[key] = self._gather(key, idx)
                out[f"{key}_is_pad"] = pad
            else:
                out[key] = self._gather(key, rows)
        if self.goals is not None:
            goal_rows = self.goals.sample(rows, start, end, len(self), rng)
            same = (goal_rows >= rows) & (goal_rows < end)
            out["goal_offset"] = np.where(same, goal_rows - rows, -1)
            for key in self.goal_keys:
                out[f"goal.{key}"] = self._gather(key, goal_rows)
        return out

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A batch of ``batch_size`` samples at uniformly random frames (with replacement)."""
        return self.get(rng.integers(0, len(self), batch_size), rng)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        """Sample ``i`` (0 <= i < len), without the batch dimension.

        Goals draw from Python's ``random`` module, which torch's DataLoader seeds differently in
        each worker (a numpy generator copied into workers would repeat the same goals in each).
        """
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} of {len(self)}")
        rng = np.random.default_rng(random.getrandbits(64)) if self.goals is not None else None
        return {k: v[0] for k, v in self.get(np.array([i % len(self)]), rng).items()}
