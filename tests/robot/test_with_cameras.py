"""A driver with cameras (what `tether serve` runs for hardware with --cameras): frames join every
observation from the cameras' own threads, and a stopped or frozen camera ends the episode
through the real robot server instead of feeding a policy a stale view."""

import time

import cv2
import numpy as np
import pytest

from tether.perception.cameras import CameraError, OpenCVCamera, SyntheticCamera
from tether.robot.client import RobotClient, RobotLinkError
from tether.robot.driver import RobotFault
from tether.robot.drivers.pointmass import PointMassRobot
from tether.robot.drivers.with_cameras import CameraRobot

RATE = 50.0


def pointmass():
    return PointMassRobot(rate_hz=RATE, max_episode_steps=10_000)


def test_frames_join_the_spec_and_every_observation_without_waiting_for_the_camera():
    robot = CameraRobot(pointmass(), [SyntheticCamera("top", 64, 48, 10.0)])
    assert robot.spec.observation["observation.images.top"].shape == (48, 64, 3)
    assert robot.spec.observation["observation.state"] == pointmass().spec.observation["observation.state"]
    robot.connect()
    try:
        first = robot.reset(None, 0).values["observation.images.top"]
        assert first.shape == (48, 64, 3) and first.dtype == np.uint8
        # at 10 fps a camera gives a new frame every 0.1 s: ticks in between publish the newest
        # frame again instead of blocking for the next one
        frames = []
        for _ in range(5):
            robot.act(np.zeros(2, np.float32))
            frames.append(robot.observe().values["observation.images.top"])
        assert any(a is b for a, b in zip(frames, frames[1:]))
        time.sleep(0.25)
        assert not np.array_equal(robot.observe().values["observation.images.top"], frames[-1])
    finally:
        robot.disconnect()


def test_a_frozen_camera_faults_the_tick_naming_it():
    robot = CameraRobot(pointmass(), [SyntheticCamera("wrist", 32, 32, 2.0)], max_age_s=0.1)
    robot.connect()
    try:
        robot.reset(None, 0)  # the first frame is fresh
        time.sleep(0.2)  # a 2 fps camera has nothing newer than 0.1 s for most of its period
        with pytest.raises(RobotFault, match=r"camera 'wrist' gave no frame for 0\.\d\d s \(> 0\.1 s\)"):
            for _ in range(20):
                robot.observe()
                time.sleep(0.05)
    finally:
        robot.disconnect()


def test_a_camera_that_stops_ends_the_episode_and_the_server_runs_on(serve):
    camera = SyntheticCamera("top", 32, 32, RATE, fail_after=15)
    with serve(CameraRobot(pointmass(), [camera])) as server:
        with RobotClient(server.address) as client:
            state = client.reset()
            for _ in range(200):
                client.send_action(np.zeros(2, np.float32), state["seq"])
                state = client.next_state()
                if state["done"]:
                    break
            assert state["done"]
            faults = [e for e in state["events"] if e.startswith("fault: ")]
            # the frame grows too old before the camera's own read times out
            assert faults and faults[0].startswith("fault: camera 'top' gave no frame for 0.5")
            # the next reset restarts a camera that stopped; this one stays dead: refused
            with pytest.raises(RobotLinkError, match=r"reset failed: (RobotFault|CameraError): camera 'top' "):
                client.reset()
            time.sleep(1.2)  # the camera's own read has timed out by now: it counts as stopped
            for _ in range(2):  # each reset tries to start it again
                with pytest.raises(RobotLinkError, match="reset failed: CameraError: camera 'top' delivered no frame"):
                    client.reset()
            assert client.next_state()["seq"] > state["seq"]  # the server still ticks
        assert server.stats.faults == 1


def test_a_replugged_camera_comes_back_at_the_next_reset(tmp_path):
    video = tmp_path / "top.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 20.0, (32, 24))
    for k in range(4):
        writer.write(np.full((24, 32, 3), 60 * k, np.uint8))
    writer.release()
    # a file without looping ends like an unplugged camera; starting it again plays it again
    robot = CameraRobot(pointmass(), [OpenCVCamera(str(video), "top", fps=20.0)])
    robot.connect()
    try:
        robot.reset(None, 0)
        with pytest.raises(RobotFault, match="camera 'top' stopped: camera 'top' .* stopped delivering frames"):
            for _ in range(100):
                robot.observe()
                time.sleep(0.02)
        assert robot.reset(None, 1).values["observation.images.top"].shape == (24, 32, 3)
    finally:
        robot.disconnect()


def test_camera_names_must_be_new_observations():
    with pytest.raises(ValueError, match="observation.images.top is already an observation"):
        CameraRobot(pointmass(), [SyntheticCamera("top", 8, 8), SyntheticCamera("top", 8, 8)])
    with pytest.raises(CameraError, match="'gone'"):
        CameraRobot(pointmass(), [OpenCVCamera("/dev/video-missing", "gone")])
