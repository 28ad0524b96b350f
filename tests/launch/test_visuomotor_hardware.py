"""A policy that sees, on hardware: `tether serve --robot feetech --cameras top=FILE` publishes a
camera beside an SO-101 (Feetech's own SDK against STS3215 servos emulated byte by byte on a pty;
a video file played in a loop stands in for the USB camera). Episodes recorded through that server
train a visuomotor GCBC, and `tether eval --robot` runs its ONNX export on the arm, the policy
reading the camera's frames from the server's state messages."""

import json

import cv2
import numpy as np
import pytest

pytest.importorskip("scservo_sdk", reason="install tether[feetech]")

from tether.launch import processes  # noqa: E402
from tether.launch.cli import main  # noqa: E402
from tether.robot.client import RobotClient  # noqa: E402
from tether.robot.dataset import Dataset, DatasetWriter  # noqa: E402
from tether.robot.drivers.emulators.sts import STSBus, zero_pose_calibration  # noqa: E402
from tether.robot.drivers.feetech import SO101_JOINTS  # noqa: E402
from tether.robot.recorder import Recorder  # noqa: E402

pytestmark = pytest.mark.realtime  # see tests/conftest.py: runs alone under pytest-xdist

IDS = (1, 2, 3, 4, 5, 6)
RATE, STEPS = 20.0, 15


def write_video(path, frames=30, size=(64, 48)):
    """A bar sweeping across the frame: a scene that changes, as a live camera's does."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), RATE, size)
    for k in range(frames):
        image = np.full((size[1], size[0], 3), 40, np.uint8)
        image[:, 2 * k % size[0]:][:, :6] = 220
        writer.write(image)
    writer.release()


def test_record_train_and_eval_a_visuomotor_policy_on_an_so101_and_its_camera(tmp_path, one_thread):
    video = tmp_path / "top.mp4"
    write_video(video)
    with STSBus(IDS, start_ticks=(2048,) * 6) as bus:
        calib = tmp_path / "so101_calib.json"
        zero_pose_calibration(bus, SO101_JOINTS).save(calib)
        arm = tmp_path / "so101.json"
        arm.write_text(json.dumps({"port": bus.port, "calibration": str(calib), "rate_hz": RATE,
                                   "max_episode_steps": STEPS}))
        address = processes.free_tcp_address()
        server = processes.start(["serve", "--robot", "feetech", "--robot-config", str(arm),
                                  "--cameras", f"top={video}", "--address", address], tmp_path / "serve.log")
        try:
            processes.wait_for_server(address, server)
            # 1. demonstrations through the server: its camera is in the spec and every state
            with RobotClient(address) as client:
                spec = client.spec
                assert spec.observation["observation.images.top"].shape == (48, 64, 3)
                recorder = Recorder(address, DatasetWriter(tmp_path / "ds", spec, RATE)).start()
                for episode in range(3):
                    state = client.reset()
                    while not state["done"]:
                        joints = np.asarray(state["observation"]["observation.state"], np.float32)
                        client.send_action(joints + 0.02 * (episode + 1), state["seq"])
                        state = client.next_state()
                # the last episode's end reaches the recorder a tick after the client sees it
                assert recorder.wait_for(3, timeout_s=30), recorder.stats
                recorder.stop()
            ds = Dataset(tmp_path / "ds")
            assert len(ds) == 3
            frames = ds.video("observation.images.top", 0)
            assert frames.shape == (ds.episodes[0]["length"], 48, 64, 3) and frames.std() > 10

            # 2. a visuomotor policy on those frames, exported to ONNX
            out = tmp_path / "run"
            main(["train", str(tmp_path / "ds"), "--algo", "gcbc", "--out", str(out),
                  "--obs.cameras", "top", "--obs.channels", "8", "16", "--obs.feature-dim", "8",
                  "--beso.d-model", "32", "--beso.n-layers", "1", "--beso.n-heads", "2",
                  "--optim.steps", "3", "--optim.batch-size", "8", "--optim.warmup-steps", "1",
                  "--cache-dir", str(tmp_path / "cache")])
            main(["export", str(out / "policy.pt"), "--out", str(out / "policy.onnx")])

            # 3. on the arm: every action answers a state that carried the camera's frame
            goals_before = sum(len(bus.servos[i].goals) for i in IDS)
            main(["eval", str(out / "policy.onnx"), "--robot", address, "--episodes", "2",
                  "--out", str(tmp_path / "eval")])
        finally:
            processes.stop(server)
        assert server.returncode == 0, (tmp_path / "serve.log").read_text()[-2000:]
        assert sum(len(bus.servos[i].goals) for i in IDS) > goals_before + 2 * STEPS
    results = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert results["episodes"] == 2 and [e["length"] for e in results["per_episode"]] == [STEPS, STEPS]
    assert results["latency_ms"]["p50"] > 0


def test_serve_refuses_bad_camera_arguments_before_the_arm_moves(tmp_path, cli_error):
    assert "--camera-size is for hardware cameras" in cli_error("serve", "--camera-size", "640x480")
    with STSBus(IDS, start_ticks=(2048,) * 6) as bus:
        calib = tmp_path / "so101_calib.json"
        zero_pose_calibration(bus, SO101_JOINTS).save(calib)
        arm = tmp_path / "so101.json"
        arm.write_text(json.dumps({"port": bus.port, "calibration": str(calib)}))
        serve = ("serve", "--robot", "feetech", "--robot-config", arm)
        assert "--cameras takes NAME=SOURCE (e.g. front=0), not 'front'" in cli_error(*serve, "--cameras", "front")
        err = cli_error(*serve, "--cameras", "front=/dev/video-missing")
        assert "camera 'front' (/dev/video-missing) could not be opened" in err
        assert not any(bus.torque(i) for i in IDS) and not any(bus.servos[i].goals for i in IDS)
