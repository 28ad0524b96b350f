"""Replay buffers for online fine-tuning: preallocated numpy rings, and symmetric sampling.

A :class:`ReplayBuffer` holds transitions (s, a, r, s', d) with, per row, the task, the weights
version of the policy that acted (the actor tags each transition), whether a human intervened,
and the Monte-Carlo return-to-go (Cal-QL's bound; -inf, no bound, until its episode has ended).
Observations and actions are stored as the learner trains on them (normalized).

:class:`MixedSampler` draws a batch with a fixed share from an offline buffer (the dataset, plus
intervention demos for HIL-SERL) and the rest from the online one: RLPD's symmetric sampling,
50% / 50% (Ball et al., ICML 2023). WSRL keeps no offline data (Zhou et al., ICLR 2025): share 0,
and no offline buffer at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLUMNS = ("obs", "action", "reward", "next_obs", "done", "task", "version", "intervention", "mc_return")


class ReplayBuffer:
    """A ring of ``capacity`` transitions; the oldest are overwritten once full.

    Args:
        capacity: rows. obs_dim, action_dim: S, A.

    Raises:
        ValueError: capacity < 1.

    Attributes:
        obs, next_obs: float32 [C, S]; action: float32 [C, A]; reward, mc_return: float32 [C];
        done, intervention: bool [C]; task, version: int64 [C]. ``size`` rows are valid, ``added``
        counts every transition ever added.
    """

    def __init__(self, capacity: int, obs_dim: int, action_dim: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.obs_dim, self.action_dim = capacity, obs_dim, action_dim
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.zeros((capacity, action_dim), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.mc_return = np.full(capacity, -np.inf, np.float32)
        self.done = np.zeros(capacity, bool)
        self.intervention = np.zeros(capacity, bool)
        self.task = np.zeros(capacity, np.int64)
        self.version = np.zeros(capacity, np.int64)
        self.size = 0
        self.added = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, reward, next_obs, done, task=0, version=0, intervention=False,
            mc_return=None) -> np.ndarray:
        """Append K transitions (arrays [K, S], [K, A], [K], [K, S], [K]; scalars broadcast for the
        rest). Returns the rows written [K] (to set ``mc_return`` once the episode ends).

        Raises:
            ValueError: shapes that do not fit, or K > capacity.
        """
        obs = np.asarray(obs, np.float32).reshape(-1, self.obs_dim)
        k = len(obs)
        action = np.asarray(action, np.float32)
        next_obs = np.asarray(next_obs, np.float32)
        if action.shape != (k, self.action_dim) or next_obs.shape != (k, self.obs_dim):
            raise ValueError(f"expected action [{k}, {self.action_dim}] and next_obs [{k}, {self.obs_dim}], "
                             f"got {action.shape} and {next_obs.shape}")
        if k > self.capacity:
            raise ValueError(f"{k} transitions do not fit a buffer of {self.capacity}")
        rows = (self.added + np.arange(k)) % self.capacity
        columns = {"obs": obs, "action": action, "next_obs": next_obs, "reward": reward, "done": done,
                   "task": task, "version": version, "intervention": intervention,
                   "mc_return": -np.inf if mc_return is None else mc_return}
        for name, value in columns.items():
            target = getattr(self, name)
            value = np.asarray(value)
            if value.ndim and value.shape[0] != k:
                raise ValueError(f"{name} has {value.shape[0]} rows, expected {k}")
            target[rows] = value
        self.added += k
        self.size = min(self.capacity, self.size + k)
        return rows

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` rows uniformly (with replacement): column name -> array [n, ...].

        Raises:
            ValueError: the buffer is empty.
        """
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        return self.rows(rng.integers(0, self.size, n))

    def rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The columns at ``rows``."""
        return {name: getattr(self, name)[rows] for name in COLUMNS}

    def save(self, path: Path | str) -> Path:
        """Write the valid rows (oldest first) to an ``.npz`` file, atomically."""
        order = (np.arange(self.size) + (self.added - self.size)) % self.capacity
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, added=self.added, **{name: getattr(self, name)[order] for name in COLUMNS})
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path | str, capacity: int) -> ReplayBuffer:
        """A buffer of ``capacity`` holding what :meth:`save` wrote (the newest rows if it is
        smaller)."""
        with np.load(path) as f:
            data = {name: f[name] for name in COLUMNS}
            added = int(f["added"])
        buf = cls(capacity, data["obs"].shape[1], data["action"].shape[1])
        keep = slice(max(0, len(data["obs"]) - capacity), None)
        buf.add(**{"obs": data["obs"][keep], "action": data["action"][keep], "reward": data["reward"][keep],
                   "next_obs": data["next_obs"][keep], "done": data["done"][keep], "task": data["task"][keep],
                   "version": data["version"][keep], "intervention": data["intervention"][keep],
                   "mc_return": data["mc_return"][keep]})
        buf.added = max(buf.added, added)
        return buf


class MixedSampler:
    """Batches with ``round(offline_ratio * n)`` rows from ``offline`` and the rest from ``online``.

    Args:
        online: the robot's transitions. offline: the dataset (and demos), or None (WSRL).
        offline_ratio: in [0, 1]; RLPD 0.5.
        seed: of the sampler's generator.

    Raises:
        ValueError: a ratio outside [0, 1], or a positive ratio without an offline buffer.
    """

    def __init__(self, online: ReplayBuffer, offline: ReplayBuffer | None, offline_ratio: float, seed: int = 0):
        if not 0 <= offline_ratio <= 1:
            raise ValueError(f"offline_ratio must be in [0, 1], got {offline_ratio}")
        if offline_ratio > 0 and offline is None:
            raise ValueError(f"offline_ratio {offline_ratio} needs offline data (a dataset)")
        self.online, self.offline, self.offline_ratio = online, offline, offline_ratio
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> dict[str, np.ndarray]:
        """A batch of ``n`` rows (offline rows first), with a bool ``offline`` column [n].

        An empty offline buffer gives all rows to the online one and vice versa (before the first
        online transition: the offline data alone).

        Raises:
            ValueError: both buffers are empty.
        """
        k = int(round(self.offline_ratio * n)) if self.offline is not None and len(self.offline) else 0
        if len(self.online) == 0:
            k = n
        parts = []
        if k:
            parts.append((self.offline.sample(k, self.rng), True))
        if n - k:
            parts.append((self.online.sample(n - k, self.rng), False))
        batch = {name: np.concatenate([p[name] for p, _ in parts]) for name in COLUMNS}
        batch["offline"] = np.concatenate([np.full(len(p["reward"]), flag) for p, flag in parts])
        return batch
