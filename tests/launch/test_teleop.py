"""`tether teleop` for real: a keyboard on a pseudo-terminal drives a robot server in another
process, and the episodes kept, re-recorded and ended land in the dataset."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tether.robot.dataset import Dataset
from tether.robot.drivers.pointmass import PointMassRobot



def test_keyboard_teleop_records_kept_episodes_and_drops_rerecorded_ones(serve, tmp_path, pipe_lines):
    master, slave = os.openpty()
    with serve(PointMassRobot(rate_hz=50.0, max_episode_steps=100_000)) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether.launch.cli", "teleop", "--robot", server.address,
             "--device", "keyboard", "--record", str(tmp_path / "ds"), "--task", "draw a square"],
            stdin=slave, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        os.close(slave)
        out = pipe_lines(proc.stderr)
        try:
            out.wait_for("episode 0 started")

            def hold(key, seconds):  # a held key: the terminal's autorepeat, every 30 ms
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    os.write(master, key)
                    time.sleep(0.03)

            hold(b"w", 0.6)  # +x
            os.write(master, b"\n")  # end episode: keep it
            out.wait_for("starting episode 1")
            hold(b"a", 0.6)
            os.write(master, b"x")  # re-record: drop it
            out.wait_for("re-recording episode 1")
            hold(b"d", 0.6)  # -y
            os.write(master, b"\n")
            out.wait_for("starting episode 2")
            os.write(master, b"Q")  # stop
            assert proc.wait(30) == 0, "".join(out.lines)[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
            os.close(master)
    ds = Dataset(tmp_path / "ds")
    assert len(ds) == 2 and ds.tasks == ["draw a square"]
    first, second = ds.episode(0)["action"], ds.episode(1)["action"]
    assert first[:, 0].max() > 0.2 and np.abs(first[:, 1]).max() < 1e-6  # only +x
    assert second[:, 1].min() < -0.2 and np.abs(second[:, 0]).max() < 1e-6  # only -y
    assert "recorded 2 episodes" in "".join(out.lines)


def test_teleop_without_a_terminal_is_a_one_line_error(serve):
    with serve(PointMassRobot(rate_hz=50.0)) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "tether.launch.cli", "teleop", "--robot", server.address],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )
    assert proc.returncode == 2
    assert "not a terminal" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--cameras", "front", "--record", "DS"], "NAME=SOURCE"),
    (["--cameras", "front=0"], "give --record"),
    (["--cameras", "front=/dev/video-missing", "--record", "DS"], "'front'"),
])
def test_bad_camera_arguments_are_named(serve, tmp_path, args, message):
    args = [a.replace("DS", str(tmp_path / "ds")) for a in args]
    with serve(PointMassRobot(rate_hz=50.0)) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "tether.launch.cli", "teleop", "--robot", server.address, *args],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
