"""`tether train` and `tether eval` with cameras: bad settings are one line before any training
step or robot command, and a visuomotor policy trains and exports from the command line."""

from __future__ import annotations

import cv2
import numpy as np
import pytest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, target_data):
    return target_data.write(tmp_path_factory.mktemp("vmcli") / "ds", episodes=4, length=10)


@pytest.mark.parametrize("args,message", [
    (["--obs.cameras", "wrist"], r"--obs.cameras: .* has no camera observation.images.wrist \(its cameras: "
                                 r"observation.images.cam0, observation.images.cam1\)"),
    (["--obs.state-dims", "0", "7"], r"--obs.state-dims \[7\] lie outside observation.state \(2 elements\)"),
    (["--goal.kind", "image"], r"--goal.kind image encodes the goal frame .* give --obs.cameras"),
    (["--obs.cameras", "cam0", "--goal.kind", "image", "--goal.image-camera", "cam1"],
     r"--goal.image-camera observation.images.cam1 is not one of --obs.cameras"),
    (["--goal.kind", "multimodal"], r"--goal.kind multimodal encodes the goal frame .* give --obs.cameras"),
    (["--obs.cameras", "cam0", "--goal.kind", "multimodal", "--goal.image-goal-prob", "2"],
     r"--goal.image-goal-prob is 2.0, not a share in \[0, 1\]"),
    (["--obs.cameras", "cam0", "--obs.encoder", "clip", "--obs.clip-model", "ViT-Nope"], r"unknown open_clip model 'ViT-Nope'"),
])
def test_bad_settings_are_one_line_before_training(dataset, tmp_path, cli_error, args, message):
    import re

    err = cli_error("train", dataset, "--out", tmp_path / "run", "--optim.steps", "1", *args)
    assert re.search(message, err), err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_export_and_refuse_a_goal_image_of_the_wrong_size(dataset, tmp_path, cli_error, one_thread):
    from tether.launch.cli import main

    out = tmp_path / "run"
    main(["train", str(dataset), "--algo", "gcbc", "--out", str(out), "--obs.cameras", "cam0", "cam1",
          "--obs.channels", "8", "16", "--obs.feature-dim", "8", "--goal.kind", "image", "--beso.d-model", "32",
          "--beso.n-layers", "1", "--beso.n-heads", "2", "--optim.steps", "3", "--optim.batch-size", "8",
          "--optim.warmup-steps", "1", "--cache-dir", str(tmp_path / "cache")])
    main(["export", str(out / "policy.pt"), "--out", str(out / "policy.onnx")])
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((16, 16, 3), np.uint8))
    err = cli_error("eval", out / "policy.onnx", "--robot", "tcp://127.0.0.1:9", "--goal-image", tmp_path / "small.png")
    assert "--goal-image: goal image has shape [16, 16, 3] uint8, but the policy takes [32, 32, 3] uint8" in err
    err = cli_error("eval", out / "policy.onnx", "--robot", "tcp://127.0.0.1:9")
    assert "conditioned on a goal image [32, 32, 3]: give --goal-image FILE" in err
    err = cli_error("eval", out / "policy.onnx", "--robot", "tcp://127.0.0.1:9", "--goal-text", "go")
    assert "--goal-text: the policy's goal is a image, not a language goal" in err
    (tmp_path / "junk.png").write_bytes(b"not a png")
    err = cli_error("eval", out / "policy.onnx", "--robot", "tcp://127.0.0.1:9", "--goal-image", tmp_path / "junk.png")
    assert "not an image file OpenCV can read" in err
