"""Does a policy's auxiliary goal head (``--obs.aux-state-dims`` ending in MetaWorld's goal xyz,
36 37 38) see reach-v3's goal in raw renders as in the H.264-coded frames it was trained on?

Renders the reset frames of reach-v3's evaluation seeds (1000000..) from the corner and top
cameras at 128 px, raw and through tether's ``write_mp4`` (libx264, yuv420p, crf 23) and PyAV,
and prints, per axis, the correlation of the head's goal prediction with the true goal. Takes
under a minute on one thread. Usage::

    OMP_NUM_THREADS=1 MUJOCO_GL=egl python visuomotor_aux_goal_codec.py RUN/policy.pt [--seeds 40]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import av
import numpy as np
import torch

from tether.policies.checkpoint import load_policy
from tether.robot.video import write_mp4
from tether.sim.metaworld import MetaWorldTask
from tether.sim.render import OffscreenCamera

GOAL = slice(36, 39)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy", type=Path)
    parser.add_argument("--seeds", type=int, default=40)
    args = parser.parse_args()
    model = load_policy(args.policy).model.eval()
    aux = model.aux_dims.tolist()
    if aux[-3:] != [36, 37, 38]:
        raise SystemExit(f"{args.policy}: its auxiliary dims {aux} do not end in the goal's 36 37 38")
    task = MetaWorldTask("reach-v3")
    cameras = [k.removeprefix("observation.images.") for k in model.encoder.cameras]
    renders = {c: OffscreenCamera(task.model, c) for c in cameras}
    raw: dict[str, list[np.ndarray]] = {c: [] for c in cameras}
    goals = []
    for k in range(args.seeds):
        goals.append(task.reset(1_000_000 + k)[GOAL])
        for c, cam in renders.items():
            raw[c].append(cam.render(task.data))
    goals = np.array(goals)
    coded = {}
    with tempfile.TemporaryDirectory() as tmp:
        for c in cameras:
            path = write_mp4(Path(tmp) / f"{c}.mp4", np.array(raw[c]), fps=80)
            with av.open(str(path)) as container:
                coded[c] = np.array([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    for name, frames in (("raw", {c: np.array(v) for c, v in raw.items()}), ("h264", coded)):
        with torch.no_grad():
            feats = [model.encoder.encode_frames(i, torch.from_numpy(frames[c])) for i, c in enumerate(cameras)]
            pred = model.aux_head(torch.cat(feats, -1)).numpy()[:, -3:]
        corr = [round(float(np.corrcoef(pred[:, i], goals[:, i])[0, 1]), 3) for i in range(3)]
        print(f"{name}: correlation of the predicted with the true goal (x, y, z): {corr}")


if __name__ == "__main__":
    main()
