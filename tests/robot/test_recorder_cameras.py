"""The recorder with cameras on this machine, against a real robot server: operator-ended and
re-recorded episodes, play mode, and a camera that dies mid-episode."""

import numpy as np
import pytest

from tether.perception.cameras import CameraError, SyntheticCamera
from tether.robot.client import RobotClient
from tether.robot.dataset import Dataset, DatasetWriter
from tether.robot.drivers.pointmass import PointMassRobot
from tether.robot.recorder import Recorder, camera_features

RATE = 30.0


def recorder_for(server, root, cameras, **kwargs):
    spec = camera_features(server.robot.spec, cameras)
    return Recorder(server.address, DatasetWriter(root, spec, RATE), cameras=cameras, **kwargs)


def drive(client, ticks):
    state = client.latest_state()
    for _ in range(ticks):
        client.send_action(np.array([0.3, -0.2], np.float32), state["seq"])
        state = client.next_state()
    return state


def test_operator_ended_and_rerecorded_episodes_with_two_cameras(serve, tmp_path):
    robot = PointMassRobot(rate_hz=RATE, max_episode_steps=10_000)
    cams = [SyntheticCamera("front", 64, 48, RATE), SyntheticCamera("wrist", 32, 32, RATE, seed=1)]
    with serve(robot) as server:
        recorder = recorder_for(server, tmp_path / "ds", cams).start()
        with RobotClient(server.address) as client:
            for ticks, keep in ((20, True), (15, False), (25, True)):
                client.reset()
                drive(client, ticks)
                recorder.end_episode() if keep else recorder.discard_episode()
        stats = recorder.stop()
    assert stats.episodes_written == 2 and stats.episodes_dropped == 1
    ds = Dataset(tmp_path / "ds")
    assert len(ds) == 2
    for i in range(2):
        n = ds.episodes[i]["length"]
        assert 18 <= n <= 26  # the ticks driven, give or take the ones in flight at the key press
        assert ds.video("observation.images.front", i).shape == (n, 48, 64, 3)
        assert ds.video("observation.images.wrist", i).shape == (n, 32, 32, 3)
        ep = ds.episode(i)
        assert ep["next.done"][-1] and not ep["next.done"][:-1].any()
    front = stats.cameras["front"]
    assert front.used > 40 and front.lost == 0


def test_play_mode_splits_without_resets_and_saves_the_last_piece(serve, tmp_path):
    robot = PointMassRobot(rate_hz=RATE, max_episode_steps=10_000)
    with serve(robot) as server:
        with RobotClient(server.address) as client:
            client.reset()
            recorder = recorder_for(server, tmp_path / "ds", [SyntheticCamera("cam", 32, 32, RATE)],
                                    play_episode_s=0.5).start()
            drive(client, 40)
        stats = recorder.stop()
    ds = Dataset(tmp_path / "ds")
    lengths = [e["length"] for e in ds.episodes]
    assert len(lengths) >= 3 and all(n == 15 for n in lengths[:-1]) and 1 <= lengths[-1] <= 15
    assert stats.episodes_written == len(lengths)
    states = ds.frames(["observation.state"])["observation.state"]
    steps = np.diff(states[:, 0])  # one continuous trajectory: no jump between pieces
    assert np.all(np.abs(steps) < 0.05)


def test_a_camera_that_dies_stops_recording_with_its_name_and_keeps_earlier_episodes(serve, tmp_path):
    robot = PointMassRobot(rate_hz=RATE, max_episode_steps=10_000)
    cam = SyntheticCamera("gripper_cam", 32, 32, RATE, fail_after=45)
    with serve(robot) as server:
        recorder = recorder_for(server, tmp_path / "ds", [cam])
        recorder._streams[0].timeout_s = 0.5
        recorder.start()
        with RobotClient(server.address) as client:
            client.reset()
            drive(client, 20)
            recorder.end_episode()
            client.reset()
            drive(client, 60)  # the camera stops after its 45th frame
        with pytest.raises(CameraError, match="gripper_cam"):
            recorder.check()
        stats = recorder.stop()
    assert stats.episodes_written == 1 and stats.episodes_dropped == 1
    ds = Dataset(tmp_path / "ds")
    assert len(ds) == 1 and len(ds.video("observation.images.gripper_cam", 0)) == ds.episodes[0]["length"]
    assert not [p for p in (tmp_path / "ds").rglob("*.tmp")]
