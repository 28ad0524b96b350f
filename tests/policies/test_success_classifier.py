"""Success classifier: frame labels from next.success, learning a visible success on held-out
episodes, ONNX parity and metadata, the relabelled sparse reward, and clear errors for data
that cannot train it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tether.launch.cli import main
from tether.policies.configs import SuccessClassifierConfig
from tether.policies.success_classifier import (
    IGNORED, NEGATIVE, POSITIVE, ClassifierDataError, classifier_rewards, fit_success_classifier, load_classifier,
    predict, random_shift, success_labels,
)
from tether.robot.dataset import Dataset, DatasetWriter
from tether.robot.spec import Feature, RobotSpec

SPEC = RobotSpec(
    "toy", 10.0,
    {"observation.state": Feature("float32", (2,), ("x", "y")),
     "observation.images.front": Feature("uint8", (32, 32, 3), unit="pixel")},
    Feature("float32", (2,), ("x", "y"), low=(-1, -1), high=(1, 1)),
)


pytestmark = pytest.mark.usefixtures("one_thread")


def success_dataset(root: Path, episodes: int = 12, length: int = 30, seed: int = 0, with_success: bool = True) -> Path:
    """A block moves across the image; in successful episodes (every other one) it ends inside a
    marked goal square, which is what the frames show at success."""
    writer = DatasetWriter(root, SPEC, fps=10)
    rng = np.random.default_rng(seed)
    for k in range(episodes):
        succeeds = with_success and k % 2 == 0
        end = np.array([22, 22]) if succeeds else rng.integers(2, 12, 2)
        path = np.linspace(rng.integers(2, 8, 2), end, length).round().astype(int)
        image = np.full((length, 32, 32, 3), 30, np.uint8)
        image[:, 20:30, 20:30, 1] = 90  # the goal square (green)
        for t, (y, x) in enumerate(path):
            image[t, y:y + 6, x:x + 6] = 230
        success = np.zeros((length, 1), bool)
        success[-1] = succeeds
        writer.add_episode({
            "observation.state": (path / 32).astype(np.float32),
            "observation.images.front": image,
            "action": rng.uniform(-1, 1, (length, 2)).astype(np.float32),
            "next.success": success,
        }, "place the block")
    return root


def test_labels_take_the_last_frames_of_successes_and_leave_a_gap(tmp_path):
    ds = Dataset(success_dataset(tmp_path / "ds", episodes=2, length=30))
    labels = success_labels(ds, SuccessClassifierConfig(positive_frames=3, ignore_frames=5))
    assert (labels[0][-3:] == POSITIVE).all() and (labels[0][-8:-3] == IGNORED).all()
    assert (labels[0][:-8] == NEGATIVE).all()
    assert (labels[1] == NEGATIVE).all()  # a failed episode: every frame a negative


def test_random_shift_keeps_shape_and_moves_content():
    rng = np.random.default_rng(0)
    frames = np.zeros((4, 16, 16, 3), np.uint8)
    frames[:, 6:10, 6:10] = 255
    shifted = random_shift(frames, 3, rng)
    assert shifted.shape == frames.shape and shifted.dtype == np.uint8
    assert any(not np.array_equal(s, frames[0]) for s in shifted)
    assert (random_shift(frames, 0, rng) == frames).all()


def test_classifier_learns_a_visible_success_and_exports(tmp_path, monkeypatch):
    monkeypatch.setenv("TETHER_CACHE_DIR", str(tmp_path / "cache"))
    root = success_dataset(tmp_path / "ds", episodes=16)
    cfg = SuccessClassifierConfig(channels=(8, 16), hidden=(16,), steps=250, lr=3e-3, batch_size=32,
                                  positive_frames=3, ignore_frames=8, val_fraction=0.25)
    result = fit_success_classifier(root, cfg, tmp_path / "clf")
    val = result.report["val"]
    assert result.report["val_episodes"] == 4 and val["positives"] > 0
    assert val["accuracy"] > 0.95 and val["recall"] > 0.9 and val["precision"] > 0.9
    assert result.report["parity"] < 1e-4
    session = ort.InferenceSession(str(tmp_path / "clf" / "classifier.onnx"))
    meta = json.loads(session.get_modelmeta().custom_metadata_map["tether.classifier"])
    assert meta == {"camera": "observation.images.front", "image_shape": [32, 32, 3], "threshold": 0.75}
    model, camera, shape = load_classifier(tmp_path / "clf" / "classifier.pt")
    assert camera == "observation.images.front"
    probe = np.random.default_rng(1).integers(0, 256, (3, *shape), dtype=np.uint8)
    np.testing.assert_allclose(predict(model, probe), predict(result.model, probe), atol=1e-6)


def test_rewards_score_the_next_frame():
    probs = [np.array([0.1, 0.2, 0.9, 0.95], np.float32), np.array([0.8], np.float32)]
    rewards = classifier_rewards(probs, 0.75)
    np.testing.assert_array_equal(rewards[0], [0, 1, 1, 1])  # row t: the step into frame t + 1
    np.testing.assert_array_equal(rewards[1], [1])  # a last row takes its own frame


def test_cli_relabels_and_refuses_data_without_successes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TETHER_CACHE_DIR", str(tmp_path / "cache"))
    root = success_dataset(tmp_path / "ds", episodes=6, length=20)
    main(["success-classifier", str(root), "--out", str(tmp_path / "clf"), "--relabel", "--steps", "30",
          "--channels", "8", "--hidden", "8", "--batch-size", "16", "--ignore-frames", "4"])
    out = capsys.readouterr().out
    assert "held out" in out and "relabelled" in out
    ds = Dataset(root)
    assert "reward.classifier" in ds.features and "next.success" in ds.features
    reward = ds.episode(0, ["reward.classifier"])["reward.classifier"]
    assert reward.shape == (20,) and set(np.unique(reward)) <= {0.0, 1.0}

    none = success_dataset(tmp_path / "fail", episodes=4, length=10, with_success=False)
    with pytest.raises(SystemExit):
        main(["success-classifier", str(none), "--out", str(tmp_path / "x"), "--steps", "5"])
    assert "hold no success frame" in capsys.readouterr().err
    with pytest.raises(ClassifierDataError, match="no next.success column"):
        success_labels(Dataset(Path(__file__).parents[1] / "fixtures" / "lerobot_v30"), SuccessClassifierConfig())
