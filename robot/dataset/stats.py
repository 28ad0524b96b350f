"""Feature statistics of a dataset (``meta/stats.json`` and the per-episode ``stats/*`` columns).

Per feature: ``min``, ``max``, ``mean``, ``std``, the quantiles ``q01 q10 q50 q90 q99`` per
dimension and ``count`` (frames), as LeRobot's ``compute_stats.py`` computes them; images per
channel over pixel values scaled to [0, 1], shaped (C, 1, 1). Episode statistics combine into
dataset statistics without a second pass over the data: exactly for min/max/mean/std (count-weighted
means, pooled variances), and for quantiles as LeRobot does, by a count-weighted average.
"""

from __future__ import annotations

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{int(q * 100):02d}" for q in QUANTILES)
MAX_IMAGE_FRAMES = 100  # frames sampled per episode for image statistics


def feature_stats(
    values: np.ndarray, is_image: bool = False, count: int | None = None
) -> dict[str, np.ndarray]:
    """Stats of one episode's column: ``values`` is [N, ...] (images [N, H, W, C] uint8, possibly
    a sample of the episode's frames, in which case ``count`` is the episode's length)."""
    n = len(values) if count is None else count
    if is_image:
        step = max(1, len(values) // MAX_IMAGE_FRAMES)
        x = values[::step].astype(np.float64) / 255.0
        x = x.reshape(-1, x.shape[-1])  # pixels x channels
        shape = (-1, 1, 1)
    else:
        x = values.astype(np.float64).reshape(len(values), -1)
        shape = (-1,)
    stats = {
        "min": x.min(0).reshape(shape),
        "max": x.max(0).reshape(shape),
        "mean": x.mean(0).reshape(shape),
        "std": x.std(0).reshape(shape),
        "count": np.array([n]),
    }
    for key, q in zip(QUANTILE_KEYS, np.quantile(x, QUANTILES, axis=0)):
        stats[key] = q.reshape(shape)
    return stats


class ImageSample:
    """A bounded sample of a stream of images for their statistics, kept while they are encoded.

    Every ``stride``-th frame is kept, spatially subsampled to at most ~160 px a side; when more
    than ``2 * MAX_IMAGE_FRAMES`` are held, every other one is dropped and the stride doubles.
    Memory stays under ~30 MB per camera whatever the episode length (LeRobot likewise estimates
    image statistics from a subsample of frames).
    """

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.count = 0
        self.stride = 1

    def add(self, image: np.ndarray) -> None:
        """Offer one frame uint8 [H, W, C]."""
        if self.count % self.stride == 0:
            step = max(1, max(image.shape[:2]) // 160)
            self.frames.append(np.ascontiguousarray(image[::step, ::step]))
            if len(self.frames) > 2 * MAX_IMAGE_FRAMES:
                self.frames = self.frames[::2]
                self.stride *= 2
        self.count += 1

    def stats(self) -> dict[str, np.ndarray]:
        """``feature_stats`` of the sampled frames, counting every frame offered."""
        return feature_stats(np.stack(self.frames), is_image=True, count=self.count)


def aggregate(episodes: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Combine per-episode stats of one feature into stats over all their frames."""
    counts = np.array([float(e["count"][0]) for e in episodes])
    weights = counts / counts.sum()
    means = np.stack([e["mean"] for e in episodes])
    w = weights.reshape(-1, *([1] * (means.ndim - 1)))
    mean = (w * means).sum(0)
    # pooled variance: E[x^2] - E[x]^2 over the union of the episodes
    second = (w * (np.stack([e["std"] for e in episodes]) ** 2 + means**2)).sum(0)
    out = {
        "min": np.min(np.stack([e["min"] for e in episodes]), 0),
        "max": np.max(np.stack([e["max"] for e in episodes]), 0),
        "mean": mean,
        "std": np.sqrt(np.maximum(second - mean**2, 0.0)),
        "count": np.array([int(counts.sum())]),
    }
    for key in QUANTILE_KEYS:
        out[key] = (w * np.stack([e[key] for e in episodes])).sum(0)
    return out


def to_jsonable(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, list]]:
    """Feature -> stat -> nested lists, as ``meta/stats.json`` stores them."""
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}
