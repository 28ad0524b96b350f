"""Cameras: OpenCV capture in a thread (from real video files) and the simulated camera."""

import threading
import time

import numpy as np
import pytest

from tether.perception.cameras import CameraError, OpenCVCamera, SimulatedCamera
from tether.robot.video import write_mp4


@pytest.fixture
def red_video(tmp_path):
    frames = np.zeros((40, 48, 64, 3), np.uint8)
    frames[..., 0] = 200  # red in RGB
    frames[:, :, :, 1] = np.arange(40)[:, None, None] * 5  # green grows with the frame number
    return write_mp4(tmp_path / "red.mp4", frames, fps=40)


def test_frames_are_rgb_timestamped_and_paced(red_video):
    cam = OpenCVCamera(str(red_video), name="front", fps=40)
    cam.start()
    try:
        frames = [cam.read() for _ in range(10)]
    finally:
        cam.stop()
    image = frames[0].image
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert abs(int(image[..., 0].mean()) - 200) < 8 and image[..., 2].mean() < 8  # RGB, not BGR
    stamps = np.array([f.timestamp for f in frames])
    assert np.all(np.diff(stamps) > 0) and 0.15 < stamps[-1] - stamps[0] < 0.4  # ~40 fps
    assert [f.index for f in frames] == sorted({f.index for f in frames})


def test_two_cameras_at_once(red_video):
    cams = [OpenCVCamera(str(red_video), name=f"cam{i}", fps=40) for i in range(2)]
    for cam in cams:
        cam.start()
    got = {}

    def grab(cam):
        got[cam.name] = [cam.read().index for _ in range(8)]

    threads = [threading.Thread(target=grab, args=(c,)) for c in cams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for cam in cams:
        cam.stop()
    assert set(got) == {"cam0", "cam1"} and all(len(v) == 8 for v in got.values())


def test_slow_reader_gets_the_newest_frame_and_drops_are_counted(red_video):
    cam = OpenCVCamera(str(red_video), name="front", fps=40)
    cam.start()
    try:
        first = cam.read()
        time.sleep(0.2)  # ~8 frames arrive meanwhile
        newest = cam.read()
    finally:
        cam.stop()
    assert newest.index - first.index >= 5 and cam.dropped >= 4


def test_missing_device_is_named():
    cam = OpenCVCamera("/dev/video-does-not-exist", name="wrist")
    with pytest.raises(CameraError, match="camera 'wrist' \\(/dev/video-does-not-exist\\) could not be opened"):
        cam.start()


def test_a_camera_that_stops_delivering_is_named(red_video):
    cam = OpenCVCamera(str(red_video), name="front", fps=400)
    cam.start()
    try:
        with pytest.raises(CameraError, match="camera 'front' .* stopped delivering frames"):
            for _ in range(100):
                cam.read(timeout_s=1.0)
    finally:
        cam.stop()


def test_simulated_camera_has_the_same_interface():
    from tether.sim.metaworld import MetaWorldTask
    from tether.sim.render import OffscreenCamera

    task = MetaWorldTask("reach-v3")
    task.reset(0)
    renderer = OffscreenCamera(task.model, "topview", 32, 32)
    cam = SimulatedCamera(lambda: renderer.render(task.data), name="topview")
    with pytest.raises(CameraError, match="start"):
        cam.read()
    cam.start()
    a, b = cam.read(), cam.read()
    assert a.image.shape == (32, 32, 3) and b.index == a.index + 1 and b.timestamp >= a.timestamp
    renderer.close()
