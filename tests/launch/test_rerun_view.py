"""``tether dataset view --rerun --save FILE.rrd``: the recording read back with Rerun's own reader
(``rerun.chunk.RrdReader``) against the dataset it came from; and the view's bad input."""

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tether.launch.cli import main
from tether.robot.dataset import Dataset, DatasetWriter
from tether.robot.spec import Feature, RobotSpec

SPEC = RobotSpec(
    "toy", 10.0,
    {"observation.state": Feature("float32", (3,), ("a", "b", "c"), "rad"),
     "observation.images.front": Feature("uint8", (16, 24, 3), unit="pixel"),
     "observation.images.wrist": Feature("uint8", (12, 16, 3), unit="pixel")},
    Feature("float32", (2,), ("x", "y"), "rad", low=(-1, -1), high=(1, 1)),
)
LENGTHS = (4, 5, 6)


def toy_dataset(root):
    """Three episodes with rewards, a success at the end of the last two, and cameras whose
    brightness counts the frames."""
    writer = DatasetWriter(root, SPEC, fps=10)
    for i, n in enumerate(LENGTHS):
        rng = np.random.default_rng(i)
        level = (30 + 20 * np.arange(n))[:, None, None, None]
        success = np.zeros(n, bool)
        success[-1] = i > 0
        writer.add_episode({
            "observation.state": rng.normal(size=(n, 3)).astype(np.float32),
            "observation.images.front": np.broadcast_to(level, (n, 16, 24, 3)).astype(np.uint8),
            "observation.images.wrist": np.broadcast_to(level + 10, (n, 12, 16, 3)).astype(np.uint8),
            "action": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
            "next.reward": rng.uniform(0, 1, n).astype(np.float32),
            "next.success": success,
        }, "pick" if i % 2 == 0 else "place")
    return root


def read_rrd(path: Path) -> dict[str, dict[str, list]]:
    """Entity path -> column -> values, over the non-static chunks of the file's recording, rows
    sorted by the ``frame`` (or ``tick``) timeline; one instance per row (checked), unwrapped; durations (the ``time`` timeline) in ns."""
    from rerun.chunk import RrdReader

    entities: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for chunk in RrdReader(path).stream().to_chunks():
        if chunk.is_static:
            continue
        batch = chunk.to_record_batch()
        for name in batch.schema.names:
            if name == "log_time" or name.startswith("rerun.controls"):
                continue  # wall-clock and row ids: not what tether logged
            column = batch.column(name)
            if pa.types.is_duration(column.type):
                column = column.cast(pa.int64())  # ns
            rows = column.to_pylist()
            if ":" in name:  # a component: each row is a batch of instances, here always one
                assert all(len(r) == 1 for r in rows), (chunk.entity_path, name)
                rows = [r[0] for r in rows]
            entities[chunk.entity_path][name] += rows
    for columns in entities.values():
        key = "frame" if "frame" in columns else "tick" if "tick" in columns else None
        if key is not None:
            order = np.argsort(columns[key], kind="stable")
            for name in list(columns):
                columns[name] = [columns[name][i] for i in order]
    return entities


@pytest.fixture
def rerun():
    return pytest.importorskip("rerun", reason="rerun-sdk is not installed (pip install 'tether[rerun]')")


def test_dataset_recording_holds_every_column_camera_and_episode(tmp_path, capsys, rerun):
    root = toy_dataset(tmp_path / "ds")
    rrd = tmp_path / "view" / "ds.rrd"
    main(["dataset", "view", str(root), "--save", str(rrd), "--jpeg-quality", "0"])
    assert f"wrote {rrd}: 3 episodes, 15 frames" in capsys.readouterr().out
    logged = read_rrd(rrd)
    ds = Dataset(root)
    data = ds.frames(["observation.state", "action", "next.reward", "next.success", "index"])
    assert sorted(logged) == sorted(
        ["/observation.state/a", "/observation.state/b", "/observation.state/c", "/action/x", "/action/y",
         "/next.reward", "/next.success", "/next.done", "/episode", "/episodes",
         "/cameras/observation.images.front", "/cameras/observation.images.wrist"])
    for key, names in (("observation.state", "abc"), ("action", "xy")):
        for j, name in enumerate(names):
            series = logged[f"/{key}/{name}"]
            assert series["frame"] == data["index"].tolist()  # the dataset's global index
            np.testing.assert_allclose(np.ravel(series["Scalars:scalars"]), data[key][:, j], rtol=1e-6)
    np.testing.assert_allclose(np.ravel(logged["/next.reward"]["Scalars:scalars"]), data["next.reward"], rtol=1e-6)
    assert np.ravel(logged["/next.success"]["Scalars:scalars"]).tolist() == data["next.success"].astype(float).tolist()
    # one timeline: the episodes end to end at 1 / fps, episode boundaries at their first frames
    times = np.asarray(logged["/action/x"]["time"]) / 1e9
    np.testing.assert_allclose(times, np.arange(15) / 10.0)
    assert np.ravel(logged["/episode"]["Scalars:scalars"]).tolist() == [0.0] * 4 + [1.0] * 5 + [2.0] * 6
    assert logged["/episodes"]["frame"] == [0, 4, 9]
    assert logged["/episodes"]["TextLog:text"] == [
        "episode 0: task 'pick', 4 frames, success False", "episode 1: task 'place', 5 frames, success True",
        "episode 2: task 'pick', 6 frames, success True"]
    # cameras decoded from the MP4s, as the dataset reader decodes them
    for key, (h, w) in (("observation.images.front", (16, 24)), ("observation.images.wrist", (12, 16))):
        camera = logged[f"/cameras/{key}"]
        assert camera["frame"] == list(range(15))
        decoded = np.concatenate([ds.video(key, i)[:, :h, :w] for i in range(3)])
        pixels = np.stack([np.asarray(b, np.uint8).reshape(h, w, 3) for b in camera["Image:buffer"]])
        np.testing.assert_array_equal(pixels, decoded)


def test_one_episode_jpeg_frames(tmp_path, capsys, rerun):
    import cv2

    root = toy_dataset(tmp_path / "ds")
    rrd = tmp_path / "one.rrd"
    main(["dataset", "view", str(root), "--rerun", "--episode", "2", "--save", str(rrd)])
    logged = read_rrd(rrd)
    assert logged["/action/x"]["frame"] == list(range(9, 15))
    assert logged["/episodes"]["TextLog:text"] == ["episode 2: task 'pick', 6 frames, success True"]
    blobs = logged["/cameras/observation.images.front"]["EncodedImage:blob"]
    assert len(blobs) == 6
    frames = [cv2.imdecode(np.asarray(b, np.uint8), cv2.IMREAD_COLOR) for b in blobs]
    levels = [float(f.mean()) for f in frames]  # 30, 50, ... through H.264 and JPEG
    np.testing.assert_allclose(levels, 30 + 20 * np.arange(6), atol=3)


def test_bad_view_arguments_are_one_line_errors(tmp_path, cli_error, rerun, monkeypatch):
    root = toy_dataset(tmp_path / "ds")
    rrd = tmp_path / "x.rrd"
    assert "episode 7 is out of range" in cli_error("dataset", "view", root, "--save", rrd, "--episode", 7)
    assert "not both" in cli_error("dataset", "view", root, "--save", rrd, "--episode", 1, "--episodes", 2)
    assert "--jpeg-quality must be 0" in cli_error("dataset", "view", root, "--save", rrd, "--jpeg-quality", 101)
    assert "--save FILE.rrd" in cli_error("dataset", "view", root, "--rerun", "--out", tmp_path / "o")
    assert "--episode goes with --rerun" in cli_error("dataset", "view", root, "--episode", 1)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    err = cli_error("dataset", "view", root, "--rerun")
    assert "no display for a Rerun viewer" in err and "--save FILE.rrd" in err
    assert not rrd.exists()


def test_missing_rerun_sdk_says_how_to_install(tmp_path, cli_error, monkeypatch):
    root = toy_dataset(tmp_path / "ds")
    monkeypatch.setitem(sys.modules, "rerun", None)  # as when rerun-sdk is not installed
    err = cli_error("dataset", "view", root, "--save", tmp_path / "x.rrd")
    assert "needs rerun-sdk" in err and "pip install 'tether[rerun]'" in err
