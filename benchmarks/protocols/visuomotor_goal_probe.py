"""Can a visuomotor encoder see reach-v3's goal? A probe of the image encoders' localisation.

MetaWorld's reach-v3 shows its goal only as a red sphere of 2 cm radius (a few pixels at 96 px,
beside a red arm); a pixels + proprioception policy that cannot locate it reaches the goals'
average position and succeeds only when the goal happens to lie within 5 cm of it. This probe
trains each encoder configuration (tether's ``build_image_encoder``, the same module BESO's
visuomotor policy uses, one per camera, features concatenated) with a linear head to regress the
goal's xyz (``observation.state`` 36:39) from the camera frames of the dataset's reach-v3
episodes, and reports the held-out episodes' error: the mean distance (cm), and the share of
frames within 5 cm (reach-v3's success radius) against the same share for predicting the
training goals' mean (what a policy blind to the goal can do).

Given a trained policy (a ``policy.pt`` among ``--configs``), it probes that policy's own encoders,
frozen (run-time centre crop), and only the linear head trained. Whether the goal can be read
from what the policy learned to see tells a blind encoder from an action head that ignores it.

Takes about 2-4 minutes per configuration on one CPU thread at the defaults. Usage::

    OMP_NUM_THREADS=1 python benchmarks/protocols/visuomotor_goal_probe.py DATASET \\
        --configs 96:32,64,64,64 96:32,64,64 96:32,64 --steps 1500
    OMP_NUM_THREADS=1 python benchmarks/protocols/visuomotor_goal_probe.py DATASET --configs RUN/policy.pt

Each configuration is IMAGE_SIZE:CHANNELS (one 3x3 stride-2 convolution per channel entry: 4
entries at 96 px end in a 6x6 map, 3 in 12x12, 2 in 24x24, before the spatial softmax).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tether.policies.configs import ObservationConfig
from tether.policies.image_encoders import build_image_encoder
from tether.robot.dataset.cache import VideoCache
from tether.robot.dataset.reader import Dataset

GOAL = slice(36, 39)  # MetaWorld's goal xyz in observation.state (m)
SUCCESS_RADIUS_M = 0.05  # reach-v3's success: the hand within 5 cm of the goal


def reach_frames(root: Path, cameras: list[str], task: str) -> tuple[list[dict[str, np.ndarray]], list[np.ndarray]]:
    """Per ``task`` episode: frames per camera (uint8 [T, H, W, 3]) and goals (float32 [T, 3])."""
    ds = Dataset(root)
    cache = VideoCache(ds)
    frames, goals = [], []
    for i, ep in enumerate(ds.episodes):
        columns = ds.episode(i, ["observation.state", "task_index"])
        if ds.tasks[int(columns["task_index"][0])] != task:
            continue
        frames.append({c: np.asarray(cache.array(f"observation.images.{c}", i)) for c in cameras})
        goals.append(columns["observation.state"][:, GOAL].astype(np.float32))
    if len(frames) < 2:
        raise SystemExit(f"{root}: {len(frames)} {task} episodes; the probe needs 2 or more")
    return frames, goals


class GoalProbe(nn.Module):
    """One encoder per camera, features concatenated, a linear head to xyz (m, standardized);
    ``frozen`` encoders stay in eval mode and only the head learns."""

    def __init__(self, encoders: list[nn.Module], feature_dim: int, frozen: bool = False):
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.frozen = frozen
        for p in self.encoders.parameters():
            p.requires_grad_(not frozen)
        self.head = nn.Linear(feature_dim * len(encoders), 3)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoders.train(mode and not self.frozen)
        return self

    def forward(self, images: list[torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([e(x) for e, x in zip(self.encoders, images)], dim=-1))


def build_probe(config: str, cameras: list[str], hw: tuple[int, int]) -> GoalProbe:
    """A fresh probe from IMAGE_SIZE:CHANNELS, or a trained policy's frozen encoders (a .pt path)."""
    if config.endswith(".pt"):
        from tether.policies.checkpoint import load_policy

        encoder = load_policy(Path(config)).model.encoder
        names = [k.removeprefix("observation.images.") for k in encoder.cameras]
        if names != cameras:
            raise SystemExit(f"{config} reads cameras {names}; pass --cameras {' '.join(names)}")
        encoders = [encoder.encoders[0 if encoder.cfg.shared_encoder else i] for i in range(len(names))]
        return GoalProbe(encoders, encoder.cfg.feature_dim, frozen=True)
    size, channels = config.split(":")
    cfg = ObservationConfig(cameras=tuple(cameras), image_size=int(size),
                            channels=tuple(int(c) for c in channels.split(",")))
    return GoalProbe([build_image_encoder(cfg, hw) for _ in cameras], cfg.feature_dim)


def run(config: str, frames, goals, train_eps, test_eps, cameras, steps, batch_size, seed) -> dict:
    """Train one probe (``config``: IMAGE_SIZE:CHANNELS or a policy.pt) for ``steps`` AdamW steps
    of batch ``batch_size`` on the ``train_eps`` episodes; its error on ``test_eps`` (cm, share
    within 5 cm) beside the mean-goal baseline's."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_probe(config, cameras, frames[0][cameras[0]].shape[1:3])
    train_goals = np.concatenate([goals[e] for e in train_eps])
    mean, std = train_goals.mean(0), train_goals.std(0) + 1e-6
    rows = [(e, t) for e in train_eps for t in range(len(goals[e]))]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4, weight_decay=1e-4)

    def batch(pairs):
        images = [torch.from_numpy(np.stack([frames[e][c][t] for e, t in pairs])) for c in cameras]
        target = torch.from_numpy((np.stack([goals[e][t] for e, t in pairs]) - mean) / std)
        return images, target

    t0 = time.perf_counter()
    model.train()
    for _ in range(steps):
        images, target = batch([rows[i] for i in rng.integers(0, len(rows), batch_size)])
        loss = nn.functional.mse_loss(model(images), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - t0
    model.eval()
    errors = []
    with torch.no_grad():
        for e in test_eps:
            pairs = [(e, t) for t in range(len(goals[e]))]
            for k in range(0, len(pairs), 256):
                images, target = batch(pairs[k:k + 256])
                predicted = model(images).numpy() * std + mean
                errors.append(np.linalg.norm(predicted - (target.numpy() * std + mean), axis=1))
    errors = np.concatenate(errors)
    blind = np.concatenate([np.linalg.norm(goals[e] - mean, axis=1) for e in test_eps])
    return {"config": config, "feature_map": _feature_map(model), "steps": steps, "train_s": round(train_s, 1),
            "mean_error_cm": round(100 * float(errors.mean()), 2),
            "within_5cm": round(float((errors < SUCCESS_RADIUS_M).mean()), 3),
            "blind_mean_error_cm": round(100 * float(blind.mean()), 2),
            "blind_within_5cm": round(float((blind < SUCCESS_RADIUS_M).mean()), 3)}


def _feature_map(model: GoalProbe) -> str:
    pool = model.encoders[0].pool
    side = int(round(pool.grid.shape[0] ** 0.5))
    return f"{side}x{side}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--cameras", nargs="+", default=["corner", "topview"])
    parser.add_argument("--task", default="reach-v3")
    parser.add_argument("--configs", nargs="+", default=["96:32,64,64,64", "96:32,64,64", "96:32,64"],
                        help="IMAGE_SIZE:CHANNELS each, or a trained policy.pt (its encoders, frozen)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--test-episodes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    frames, goals = reach_frames(args.dataset, args.cameras, args.task)
    order = np.random.default_rng(args.seed).permutation(len(goals)).tolist()
    test_eps, train_eps = order[:args.test_episodes], order[args.test_episodes:]
    results = []
    for config in args.configs:
        results.append(run(config, frames, goals, train_eps, test_eps, args.cameras, args.steps,
                           args.batch_size, args.seed))
        print(json.dumps(results[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
