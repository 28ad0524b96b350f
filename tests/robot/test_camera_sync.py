"""Camera frames matched to ticks: each frame of a camera at the dataset's rate is used once
whatever the phase and jitter; faster cameras are skipped down, slower ones repeated; a camera
that stops delivering is named."""

import time

import numpy as np
import pytest

from tether.perception.cameras import CameraError, Frame
from tether.robot.camera_sync import CameraStream

pytestmark = pytest.mark.realtime  # see tests/conftest.py: runs alone under pytest-xdist


class ListCamera:
    """A camera whose frames (and capture times) are given up front: all are queued at once."""

    def __init__(self, stamps, name="list"):
        self.name, self.stamps, self.k = name, list(stamps), 0

    def start(self):
        pass

    def read(self, timeout_s=1.0):
        if self.k >= len(self.stamps):
            time.sleep(timeout_s)  # as a stalled device: nothing for timeout_s, then an error
            raise CameraError(f"camera {self.name!r} stopped delivering frames")
        frame = Frame(np.full((2, 2, 3), self.k % 256, np.uint8), self.stamps[self.k], self.k)
        self.k += 1
        return frame

    def stop(self):
        pass


def matched(stamps, ticks, period):
    stream = CameraStream(ListCamera(stamps), period, timeout_s=0.2, queue_s=100)
    stream.start()  # reads frame 0
    stream._thread.join(1)  # every frame queued
    return [stream.frame_for(t).index for t in ticks], stream.stats


@pytest.mark.parametrize("phase", [0.0, 0.001, 0.49, 0.5, 0.51, 0.999])
def test_a_camera_at_the_dataset_rate_has_each_frame_used_once(phase):
    period, rng = 1 / 30, np.random.default_rng(0)
    stamps = (np.arange(200) + phase + rng.uniform(-0.3, 0.3, 200)) * period  # jitter 0.3 P
    indices, stats = matched(stamps, np.arange(1, 150) * period, period)
    assert indices == list(range(1, 150)) and stats.skipped == 0 and stats.repeated == 0


def test_a_faster_camera_is_skipped_down_and_frames_stay_close_to_their_tick():
    period = 1 / 30
    stamps = np.arange(400) * period / 2
    ticks = np.arange(10, 150) * period
    indices, stats = matched(stamps, ticks, period)
    assert np.all(np.abs(stamps[indices] - ticks) <= period)
    assert stats.skipped >= 130 and stats.repeated == 0


def test_a_slower_camera_repeats_frames_and_a_dead_one_is_named():
    period = 1 / 30
    stream = CameraStream(ListCamera(np.arange(3) * period, name="wrist"), period, timeout_s=0.2)
    stream.start()
    time.sleep(0.05)
    got = [stream.frame_for(t).index for t in np.arange(1, 3) * period]
    assert got == [1, 2]  # frame 0 was read by start()
    assert stream.frame_for(3 * period).index == 2 and stream.stats.repeated == 1
    time.sleep(0.4)
    with pytest.raises(CameraError, match="'wrist' stopped delivering"):
        stream.frame_for(4 * period)
