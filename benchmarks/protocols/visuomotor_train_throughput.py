"""Visuomotor BESO training throughput with and without the decoded-frame cache.

Measures, on a camera dataset (default: the one ``tether demo --obs image`` writes), the demo's
visuomotor policy (``tether.launch.demo.IMAGE_OBS``, BESO window 1):
- batch assembly from the decoded-frame cache (``VideoCache``: memory-mapped uint8 frames),
- batch assembly decoding the batch's frames from the MP4s (PyAV; each episode's frames of a
  batch decoded once, seeking to the keyframe before them: what a loader without the cache does,
  and a kinder one than LeRobot's per-sample decoding),
- one optimizer step (forward, backward, AdamW) on the batch,
and reports steps/s = 1 / (assembly + step) for both loaders, and their ratio.

Takes about 2 minutes on 2 CPU cores (one thread). Usage::

    OMP_NUM_THREADS=1 python benchmarks/protocols/visuomotor_train_throughput.py runs/demo_image/dataset \
        --batch-size 64 --batches 20
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from tether.launch.demo import IMAGE_OBS
from tether.policies.configs import BesoConfig, GoalConfig
from tether.policies.sequence_data import SequenceData
from tether.policies.visuomotor import VisuomotorPolicy
from tether.robot.dataset.cache import VideoCache, decode_frames


class DecodingFrames(VideoCache):
    """``VideoCache.frames`` without the cache: every call decodes its frames from the MP4."""

    def frames(self, key, episode, indices):
        ep = self.dataset.episodes[episode]
        timestamps = self.dataset.episode(episode, ["timestamp"])["timestamp"].astype(np.float64)
        indices = np.asarray(indices, np.int64)
        order = np.unique(indices)  # decode_frames wants ascending times
        times = float(ep[f"videos/{key}/from_timestamp"]) + timestamps[order]
        decoded = decode_frames(self._video_file(key, episode), times, self._shape(key), tolerance_s=self.tolerance_s)
        return decoded[np.searchsorted(order, indices)]


def seconds_per_batch(data: SequenceData, batch_size: int, batches: int) -> float:
    sample = data.batches(batch_size, seed=1)
    sample(0)  # first touch (memory maps, file handles)
    t0 = time.perf_counter()
    for step in range(1, batches + 1):
        sample(step)
    return (time.perf_counter() - t0) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/tether-throughput-cache"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    cfg = BesoConfig(window=1)
    data = SequenceData.from_dataset(args.dataset, cfg.window, cfg.action_horizon, GoalConfig(), IMAGE_OBS,
                                     cache_dir=args.cache_dir)
    data.data.warm()
    cached = seconds_per_batch(data, args.batch_size, args.batches)
    data.data.cache = DecodingFrames(data.data.cache.dataset, cache_dir=args.cache_dir)
    decoding = seconds_per_batch(data, args.batch_size, max(3, args.batches // 4))

    model = VisuomotorPolicy("beso", cfg, IMAGE_OBS, data.obs_dim, data.action_dim, data.goal_dim, data.camera_shapes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data.data.cache = VideoCache(data.data.cache.dataset, cache_dir=args.cache_dir)
    batch = data.batches(args.batch_size, seed=2)(0)
    times = []
    for i in range(6):
        t0 = time.perf_counter()
        optimizer.zero_grad()
        model.loss(**batch).backward()
        optimizer.step()
        if i:  # the first step allocates
            times.append(time.perf_counter() - t0)
    step = float(np.median(times))
    result = {
        "dataset": str(args.dataset), "batch_size": args.batch_size, "cameras": list(data.cameras),
        "batch_assembly_s": {"cache": cached, "decoding": decoding},
        "train_step_s": step,
        "steps_per_s": {"cache": 1 / (cached + step), "decoding": 1 / (decoding + step)},
    }
    result["cache_speedup"] = result["steps_per_s"]["cache"] / result["steps_per_s"]["decoding"]
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
