"""``tether pretrain-value`` end to end: ICVF on MP4 files whose frames show progress (a bar that
grows along each episode) orders held-out frames by steps to go; the same from a dataset's camera,
its encoder.pt into ``tether train --algo iql`` (frozen: the weights stay those pre-trained); and
one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tether.launch.cli import main
from tether.policies.icvf import load_icvf
from tether.policies.pretrained_encoder import load_encoder
from tether.robot.dataset import DatasetWriter
from tether.robot.drivers.pointmass import TASK, pointmass_spec
from tether.robot.spec import Feature, RobotSpec
from tether.robot.video import read_mp4, write_mp4

CAMERA = "observation.images.front"
# a tiny network and a faster target network (tau 0.05): enough TD propagation in 300 steps
SMALL = ["--icvf.channels", "8", "16", "--icvf.feature-dim", "64", "--icvf.latent-dim", "16",
         "--icvf.hidden", "64", "--icvf.tau", "0.05", "--optim.batch-size", "64", "--optim.lr", "1e-3",
         "--optim.warmup-steps", "20", "--optim.ema-decay", "0.99", "--optim.checkpoint-every", "100000"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def video_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TETHER_CACHE_DIR", str(tmp_path / "cache"))


def bar_episode(rng: np.random.Generator, length: int, h: int = 32, w: int = 32) -> np.ndarray:
    """uint8 [length, h, w, 3]: a bar of a random colour on a dark background, growing from a
    random start to a random end width: the frame tells how far along the episode is."""
    color, background = rng.integers(120, 256, 3), rng.integers(0, 60, 3)
    start, end = rng.integers(2, w // 4), rng.integers(w - w // 8, w + 1)
    frames = np.empty((length, h, w, 3), np.uint8)
    frames[:] = background
    for t in range(length):
        frames[t, h // 3: 2 * h // 3, : int(round(start + (end - start) * t / (length - 1)))] = color
    return frames


def bar_videos(root, episodes=12, seed=0):
    """MP4 files of bar episodes (16 to 24 frames); one is 48x40, the others 32x32."""
    rng = np.random.default_rng(seed)
    for i in range(episodes):
        h, w = (48, 40) if i == 5 else (32, 32)
        write_mp4(root / f"ep{i:02d}.mp4", bar_episode(rng, int(rng.integers(16, 25)), h, w), fps=10)
    return root


def bar_dataset(root, episodes=6, length=12, seed=0):
    """Point-mass episodes with a 32x32 camera showing a bar episode; next.reward -steps to go."""
    spec = pointmass_spec(10.0)
    spec = RobotSpec(spec.robot_type, spec.control_rate_hz,
                     {**spec.observation, CAMERA: Feature("uint8", (32, 32, 3), unit="pixel")},
                     spec.action, tasks=spec.tasks)
    writer = DatasetWriter(root, spec, fps=10.0)
    rng = np.random.default_rng(seed)
    for _ in range(episodes):
        writer.add_episode({"observation.state": rng.normal(size=(length, 4)).astype(np.float32),
                            "action": rng.uniform(-1, 1, (length, 2)).astype(np.float32),
                            "next.reward": -np.arange(length, dtype=np.float32)[::-1].copy(),
                            CAMERA: bar_episode(rng, length)}, TASK)
    return root


def test_icvf_on_videos_orders_held_out_frames_by_steps_to_go(tmp_path, capsys):
    videos = bar_videos(tmp_path / "videos")
    out = tmp_path / "icvf"
    main(["pretrain-value", "--videos", str(videos / "*.mp4"), "--out", str(out), "--icvf.image-size", "32",
          "--icvf.val-fraction", "0.25", "--optim.steps", "300", *SMALL])
    report = json.loads((out / "value_report.json").read_text())
    held_out = report["held_out"]
    assert len(held_out["episodes"]) == 3 and report["episodes"]["train"] == 9
    assert held_out["mean_spearman"] > 0.8, held_out
    assert all(e["spearman"] > 0.6 for e in held_out["episodes"]), held_out
    assert report["image_shape"] == [32, 32, 3]  # the 48x40 video was resized with the others
    assert report["preprocessing"]["resize"] == "32x32"
    for name in ("encoder.pt", "icvf.pt", "value_curves.png", "learning_curve.png", "config.json",
                 "checkpoints/last.pt", "metrics.json"):
        assert (out / name).exists(), name
    encoder = load_encoder(out / "encoder.pt")
    assert encoder["channels"] == [8, 16] and encoder["image_shape"] == [32, 32, 3]
    model, payload = load_icvf(out / "icvf.pt")  # the report's values come back from the checkpoint
    episode = torch.from_numpy(read_mp4(videos / "ep00.mp4"))
    v = model.value(episode, episode[-1:]).numpy()
    assert v[-1] > v[0] and payload["image_shape"] == [32, 32, 3]
    assert "held-out Spearman rho" in capsys.readouterr().out


def test_icvf_on_a_dataset_camera_then_iql_starts_from_the_frozen_encoder(tmp_path):
    dataset = bar_dataset(tmp_path / "ds")
    out = tmp_path / "icvf"
    target = bar_dataset(tmp_path / "target", episodes=3)
    main(["pretrain-value", "--dataset", str(dataset), "--camera", CAMERA, "--out", str(out),
          "--optim.steps", "20", "--report-dataset", str(target), *SMALL])
    report = json.loads((out / "value_report.json").read_text())
    assert report["image_shape"] == [32, 32, 3] and report["preprocessing"]["camera"] == CAMERA
    assert report["target"]["dataset"] == str(target) and len(report["target"]["episodes"]) == 3
    assert (out / "value_curves_target.png").stat().st_size > 1000
    assert report["episodes"] == {"train": 5, "held_out": 1, "skipped": []}
    assert report["frames"] == 6 * 12
    iql = tmp_path / "iql"
    main(["train", str(dataset), "--algo", "iql", "--out", str(iql), "--iql.encoder", "image",
          "--iql.camera", CAMERA, "--iql.channels", "8", "16", "--iql.hidden", "16", "--iql.terminal", "none",
          "--iql.encoder-init", str(out / "encoder.pt"), "--iql.freeze-encoder",
          "--optim.steps", "5", "--optim.batch-size", "8", "--optim.warmup-steps", "1"])
    pretrained = load_encoder(out / "encoder.pt")["state_dict"]
    trained = torch.load(iql / "policy.pt", weights_only=False)["state_dict"]
    for key, value in pretrained.items():
        torch.testing.assert_close(trained[f"features.encoder.{key}"], value, msg=key)


def test_bad_input_gets_one_line_errors(tmp_path, capsys):
    dataset = bar_dataset(tmp_path / "ds", episodes=2, length=4)

    def error(*args) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main(["pretrain-value", "--out", str(tmp_path / "out"), *args])
        assert exit_info.value.code == 2
        message = capsys.readouterr().err.strip()
        assert message.startswith("tether: error:") and "\n" not in message
        return message

    assert "no files match --videos" in error("--videos", str(tmp_path / "nothing" / "*.mp4"))
    assert "either --videos" in error()
    assert "either --videos" in error("--videos", "x*.mp4", "--dataset", str(dataset))
    assert f"no camera 'observation.images.wrist' in {dataset}; it has {CAMERA}" in error(
        "--dataset", str(dataset), "--camera", "observation.images.wrist")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    assert "broken.mp4: cannot decode video" in error("--videos", str(tmp_path / "broken.mp4"))
    assert "goal probabilities" in error("--dataset", str(dataset), "--icvf.p-random", "0.5")
    other = tmp_path / "other"
    main(["pretrain-value", "--dataset", str(dataset), "--out", str(other), "--icvf.image-size", "16",
          "--optim.steps", "2", "--optim.batch-size", "4", *SMALL[:5]])
    with pytest.raises(SystemExit):
        main(["train", str(dataset), "--algo", "iql", "--out", str(tmp_path / "iql"), "--iql.encoder", "image",
              "--iql.channels", "8", "16", "--iql.terminal", "none", "--iql.encoder-init", str(other / "encoder.pt")])
    assert "pre-trained on 16x16 frames but the camera gives 32x32" in capsys.readouterr().err
