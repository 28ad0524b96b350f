"""Crash safety of recording, for real: `tether collect` (recorder and robot server) is killed with
SIGKILL mid-run; every episode it had finished loads, and --resume continues the dataset with the
seeds after it."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from tether.robot.dataset import Dataset


def collect(dataset, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "tether.launch.cli", "collect", str(dataset), "--tasks", "reach-v3",
         "--image-size", "32", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def episodes_written(dataset) -> int:
    try:
        return json.loads((dataset / "meta/info.json").read_text())["total_episodes"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_kill_9_loses_at_most_the_episode_in_progress(tmp_path):
    dataset = tmp_path / "ds"
    proc = collect(dataset, "--episodes", "50")
    deadline = time.monotonic() + 120
    while episodes_written(dataset) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.37)  # somewhere inside the next episode, or while it is being written
    os.killpg(proc.pid, signal.SIGKILL)  # the recorder and its robot server die together
    proc.wait()

    ds = Dataset(dataset)
    n = len(ds)
    assert n >= 3
    for i in range(n):  # every listed episode is whole: data rows and video frames
        ep = ds.episode(i)
        assert len(ep["action"]) == ds.episodes[i]["length"]
        assert len(ds.video("observation.images.corner", i)) == ds.episodes[i]["length"]
    assert ds.frames(["index"])["index"].tolist() == list(range(ds.num_frames))

    resumed = subprocess.run(
        [sys.executable, "-m", "tether.launch.cli", "collect", str(dataset), "--tasks", "reach-v3",
         "--image-size", "32", "--episodes", "2", "--resume"],
        capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ds = Dataset(dataset)
    assert len(ds) == n + 2
    assert ds.frames(["episode_index"])["episode_index"].max() == n + 1
    assert np.all(np.diff(ds.frames(["index"])["index"]) == 1)
    leftovers = [p for p in dataset.rglob("*") if p.name.endswith(".tmp")]
    data_files = list((dataset / "data").rglob("*.parquet"))
    assert not leftovers and len(data_files) == n + 2
    # the resumed episodes go on with seeds n and n + 1: no initial condition is recorded twice
    from tether.sim.metaworld import MetaWorldTask

    task = MetaWorldTask("reach-v3")
    for i in (n, n + 1):
        np.testing.assert_array_equal(ds.episode(i)["observation.state"][0], task.reset(i))
    firsts = {ds.episode(i)["observation.state"][0].tobytes() for i in range(len(ds))}
    assert len(firsts) == n + 2
