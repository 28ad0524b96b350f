"""Goal sensitivity: how much do a goal-conditioned policy's actions depend on the goal?

Measures, for exported BESO / GCBC policies on a play dataset, how far the goal moves the action
against how far the sampler's noise moves it (the OGBench scene-play diagnostic of issue 5; ogbench_scene_play.sh
runs it at the end). Takes seconds to a minute per policy (2000 frames, three policy calls each, about
1.5 ms per BESO call in onnxruntime) on 2 CPU cores (Intel Xeon @ 2.80 GHz, 24 GB, no GPU).

For N frames of a play dataset, each exported policy (``policy.onnx`` of BESO or GCBC, single
actions or chunks) is asked for its action twice: with a hindsight goal (a frame 0.5 to 50 s
ahead in the same episode by default, the goals ogbench_scene_play.sh trains on) and with a goal from a random frame of the
dataset. With the action dimensions scaled by the dataset's action std, it prints:

- nMSE: mean squared error of the hindsight-goal action against the recorded action;
- goal sensitivity: the mean distance between the two actions, i.e. how far the goal moves the
  action (0 for a goal-free policy);
- resample spread (policies with a noise input): the mean distance between two samples for the
  same observation and goal, i.e. how far the sampler's noise moves the action.

Noise 0 feeds zero initial noise (``tether eval --deterministic``), noise 1 N(0, I) as in eval.

    python benchmarks/protocols/goal_sensitivity.py /work/exp/scene_play \\
        scene_gcbc/policy.onnx scene_beso/policy.onnx scene_beso/w3.onnx
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort

from tether.policies.sampling import GoalSampler, TrainingDataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("policies", nargs="+")
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--min-offset-s", type=float, default=0.5, help="nearest hindsight goal (s ahead)")
    ap.add_argument("--max-offset-s", type=float, default=50.0, help="farthest hindsight goal (s ahead)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = TrainingDataset(args.dataset, keys=["observation.state", "action"])
    state = data.columns["observation.state"].astype(np.float32)
    action = data.columns["action"].astype(np.float32)
    fps = data.dataset.fps
    rng = np.random.default_rng(args.seed)
    rows = rng.integers(0, len(state), args.frames)
    sampler = GoalSampler(min_offset=round(args.min_offset_s * fps), max_offset=round(args.max_offset_s * fps))
    goals = sampler.sample(rows, data.episode_start[rows], data.episode_end[rows], len(state), rng)
    random_goals = rng.integers(0, len(state), args.frames)
    std = action.std(0)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    print("| policy | noise | nMSE | goal sensitivity | resample spread |\n|---|---|---|---|---|")
    for path in args.policies:
        session = ort.InferenceSession(path, options)
        inputs = {i.name: i for i in session.get_inputs()}
        window = inputs["obs"].shape[1]
        if window != 1:
            raise SystemExit(f"{path}: window {window}; this diagnostic feeds one observation")

        def act(goal_rows: np.ndarray, noise_scale: float, noise_seed: int) -> np.ndarray:
            feed = {"obs": state[rows][:, None], "goal": state[goal_rows]}
            if "noise" in inputs:
                shape = (args.frames, *inputs["noise"].shape[1:])
                noise = np.random.default_rng(noise_seed).standard_normal(shape) * noise_scale
                feed["noise"] = noise.astype(np.float32)
            return session.run(["action"], feed)[0] / std

        for scale in (0.0, 1.0) if "noise" in inputs else (0.0,):
            a = act(goals, scale, 1)
            mse = ((a - action[rows] / std) ** 2).mean()
            sensitivity = np.linalg.norm(a - act(random_goals, scale, 1), axis=1).mean()
            spread = np.linalg.norm(a - act(goals, scale, 2), axis=1).mean() if "noise" in inputs else 0.0
            print(f"| {path} | {scale:g} | {mse:.3f} | {sensitivity:.3f} | {spread:.3f} |")


if __name__ == "__main__":
    main()
