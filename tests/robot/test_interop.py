"""LeRobotDataset v3.0 interop, both ways.

- tether reads a dataset laid out as LeRobot lays it out (``tests/fixtures/lerobot_v30``, written
  by ``tests/fixtures/make_lerobot_v30.py`` from the format's documentation: several episodes
  packed in one parquet and one mp4).
- A dataset written by tether's ``DatasetWriter`` has the structure LeRobot documents and reads
  (``docs/source/lerobot-dataset-v3.mdx``; ``datasets/utils.py``: ``create_empty_dataset_info``,
  ``DEFAULT_FEATURES``, ``get_hf_features_from_features``; ``lerobot_dataset.py``:
  ``_query_videos``, ``_get_query_indices``).
- ``-m slow``: LeRobot's own loader on both, with the interpreter of ``$LEROBOT_PYTHON`` (a venv
  with lerobot) or this one if it imports lerobot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tether.robot.dataset import Dataset, DatasetWriter
from tether.robot.spec import Feature, RobotSpec

FIXTURE = Path(__file__).parents[1] / "fixtures" / "lerobot_v30"
CAMERA = "observation.images.front"
LENGTHS = (10, 12, 8)  # of the fixture's episodes
STARTS = (0, 10, 22)


def grey(index):
    """The fixture's frame ``index`` is a uniform grey of this value (see make_lerobot_v30.py)."""
    return 20 + 7 * np.asarray(index)


# --- tether reads LeRobot's layout -------------------------------------------------------------


def test_reader_reads_the_lerobot_fixture():
    ds = Dataset(FIXTURE)
    assert len(ds) == 3 and ds.num_frames == 30 and ds.fps == 10 and ds.spec is None
    assert ds.tasks == ["pick up the cube", "open the drawer"]  # from the pandas index column
    assert ds.video_keys == [CAMERA]
    for i, (start, n) in enumerate(zip(STARTS, LENGTHS)):
        ep = ds.episode(i)
        index = np.arange(start, start + n)
        np.testing.assert_array_equal(ep["index"], index)
        np.testing.assert_array_equal(ep["frame_index"], np.arange(n))
        np.testing.assert_array_equal(ep["episode_index"], np.full(n, i))
        np.testing.assert_array_equal(ep["task_index"], np.full(n, [0, 1, 0][i]))
        np.testing.assert_allclose(ep["timestamp"], np.arange(n) / 10, atol=1e-6)
        np.testing.assert_array_equal(
            ep["observation.state"], np.stack([index, np.full(n, i), np.arange(n), 0.5 * index], 1)
        )
        np.testing.assert_array_equal(ep["action"], np.stack([index + 0.5, -index], 1))
        # columns without episode_index still select this episode's rows of the shared file
        assert len(ds.episode(i, ["action"])["action"]) == n
        frames = ds.video(CAMERA, i)
        assert frames.shape == (n, 16, 16, 3)
        np.testing.assert_allclose(frames.mean((1, 2, 3)), grey(index), atol=2)
    assert ds.frames(["index"])["index"].tolist() == list(range(30))
    stats = ds.episode_stats(1)
    np.testing.assert_allclose(stats["observation.state"]["mean"], [15.5, 1, 5.5, 7.75])
    assert stats[CAMERA]["mean"].shape == (3, 1, 1)


def test_training_windows_on_the_fixture_match_lerobots_output(tmp_path):
    """The values LeRobot 0.4.4 printed for this fixture (command in make_lerobot_v30.py)."""
    from tether.policies.sampling import TrainingDataset

    ds = TrainingDataset(
        FIXTURE, keys=["observation.state", "action", CAMERA],
        delta_timestamps={CAMERA: [-0.1, 0.0], "action": [0.0, 0.1, 0.2]},
        cache=tmp_path / "cache",
    )
    b = ds.get(np.array([0, 9, 10, 21, 22, 29]), np.random.default_rng(0))
    assert b["episode_index"].tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(b["observation.state"][2], [10, 1, 0, 5])
    np.testing.assert_array_equal(b["action"][:, :, 0], [
        [0.5, 1.5, 2.5], [9.5, 9.5, 9.5], [10.5, 11.5, 12.5],
        [21.5, 21.5, 21.5], [22.5, 23.5, 24.5], [29.5, 29.5, 29.5],
    ])
    assert b["action_is_pad"].tolist() == [[False] * 3, [False, True, True]] * 3
    assert b[f"{CAMERA}_is_pad"].tolist() == [[True, False], [False, False]] * 3
    means = b[CAMERA].mean((2, 3, 4))
    lerobot = [[19, 19], [75, 82], [89, 89], [159, 166], [173, 173], [216, 223]]
    np.testing.assert_allclose(means, lerobot, atol=0.5)


# --- LeRobot's structure in what tether writes ---------------------------------------------------

SPEC = RobotSpec(
    "toy_arm", 10.0,
    {"observation.state": Feature("float32", (3,), ("a", "b", "c")),
     CAMERA: Feature("uint8", (16, 24, 3), unit="pixel")},
    Feature("float32", (2,), ("x", "y"), low=(-1, -1), high=(1, 1)),
)
TETHER_LENGTHS = (6, 9, 4)


def write_tether(root: Path) -> Path:
    writer = DatasetWriter(root, SPEC, fps=10)
    start = 0
    for i, n in enumerate(TETHER_LENGTHS):
        index = np.arange(start, start + n)
        writer.add_episode({
            "observation.state": np.stack([index, np.full(n, i), np.arange(n)], 1).astype(np.float32),
            CAMERA: np.broadcast_to(grey(index)[:, None, None, None], (n, 16, 24, 3)).astype(np.uint8),
            "action": np.stack([index + 0.5, -index], 1).astype(np.float32),
        }, ["pick", "place"][i % 2])
        start += n
    return root


# info.json keys in LeRobot's create_empty_dataset_info (all of them, in its order)
INFO_KEYS = [
    "codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks",
    "chunks_size", "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits",
    "data_path", "video_path", "features",
]
DEFAULT_FEATURES = {
    "timestamp": ("float32", [1]), "frame_index": ("int64", [1]), "episode_index": ("int64", [1]),
    "index": ("int64", [1]), "task_index": ("int64", [1]),
}
STATS = {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}


def arrow_type(feature: dict) -> pa.DataType:
    """The arrow type HF datasets gives a feature (get_hf_features_from_features)."""
    value = pa.from_numpy_dtype(np.dtype(feature["dtype"]))
    if feature["shape"] == [1]:
        return value
    assert len(feature["shape"]) == 1, feature
    return pa.list_(value, feature["shape"][0])  # Sequence(length=D): fixed_size_list


def test_tether_dataset_has_the_v30_structure(tmp_path):
    root = write_tether(tmp_path / "ds")
    info = json.loads((root / "meta/info.json").read_text())
    assert [k for k in INFO_KEYS if k not in info] == []
    assert info["codebase_version"] == "v3.0"
    assert isinstance(info["fps"], int) and info["fps"] == 10
    assert info["total_episodes"] == 3 and info["total_frames"] == sum(TETHER_LENGTHS)
    assert info["total_tasks"] == 2 and info["chunks_size"] == 1000
    assert info["splits"] == {"train": "0:3"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    features = info["features"]
    for key, (dtype, shape) in DEFAULT_FEATURES.items():
        assert features[key]["dtype"] == dtype and features[key]["shape"] == shape, key
    for key, f in features.items():
        assert "/" not in key  # the separator of episode-metadata column names
        assert {"dtype", "shape", "names"} <= set(f) and isinstance(f["shape"], list), key
    assert features[CAMERA]["dtype"] == "video" and features[CAMERA]["shape"] == [16, 24, 3]
    assert features[CAMERA]["names"] == ["height", "width", "channels"]
    assert features[CAMERA]["info"]["video.is_depth_map"] is False
    assert features["observation.state"] == {"dtype": "float32", "shape": [3], "names": ["a", "b", "c"]}

    # data: exactly the non-video features, with the types HF datasets gives them
    files = sorted((root / "data").glob("*/*.parquet"))
    tables = [pq.read_table(f) for f in files]
    non_video = {k: f for k, f in features.items() if f["dtype"] != "video"}
    for table in tables:
        assert set(table.column_names) == set(non_video)
        for key, f in non_video.items():
            assert table.schema.field(key).type == arrow_type(f), key
    data = pa.concat_tables(tables)
    # the row position over the sorted files is the global index (the loader is positional)
    assert data.column("index").to_pylist() == list(range(sum(TETHER_LENGTHS)))

    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet")
    types = {
        "episode_index": pa.int64(), "tasks": pa.list_(pa.string()), "length": pa.int64(),
        "data/chunk_index": pa.int64(), "data/file_index": pa.int64(),
        "dataset_from_index": pa.int64(), "dataset_to_index": pa.int64(),
        f"videos/{CAMERA}/chunk_index": pa.int64(), f"videos/{CAMERA}/file_index": pa.int64(),
        f"videos/{CAMERA}/from_timestamp": pa.float64(), f"videos/{CAMERA}/to_timestamp": pa.float64(),
        "meta/episodes/chunk_index": pa.int64(), "meta/episodes/file_index": pa.int64(),
    }
    for column, t in types.items():
        assert episodes.schema.field(column).type == t, column
    rows = episodes.to_pylist()
    assert [r["episode_index"] for r in rows] == [0, 1, 2]  # positional lookup by the loader
    tasks = pq.read_table(root / "meta/tasks.parquet")
    pandas_index = json.loads(tasks.schema.metadata[b"pandas"])["index_columns"]
    task_names = tasks.column(pandas_index[0]).to_pylist()
    assert tasks.column("task_index").to_pylist() == list(range(len(task_names)))
    fps = info["fps"]
    for r in rows:
        lo, hi = r["dataset_from_index"], r["dataset_to_index"]
        assert hi - lo == r["length"]
        part = data.slice(lo, hi - lo)
        assert set(part.column("episode_index").to_pylist()) == {r["episode_index"]}
        assert part.column("frame_index").to_pylist() == list(range(r["length"]))
        # timestamps on the nominal grid: the loader decodes at from_timestamp + timestamp, 1e-4 s
        np.testing.assert_allclose(part.column("timestamp").to_numpy(), np.arange(r["length"]) / fps, atol=1e-6)
        assert r["tasks"] == [task_names[part.column("task_index")[0].as_py()]]
        data_file = root / info["data_path"].format(chunk_index=r["data/chunk_index"], file_index=r["data/file_index"])
        assert r["episode_index"] in pq.read_table(data_file).column("episode_index").to_pylist()
        video = root / info["video_path"].format(
            video_key=CAMERA, chunk_index=r[f"videos/{CAMERA}/chunk_index"],
            file_index=r[f"videos/{CAMERA}/file_index"])
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name in ("h264", "hevc", "av1", "libdav1d")
            times = [float(f.pts * stream.time_base) for f in container.decode(stream)]
            assert stream.codec_context.pix_fmt == "yuv420p"
        start = r[f"videos/{CAMERA}/from_timestamp"]
        want = start + np.arange(r["length"]) / fps
        got = np.array([t for t in times if start - 1e-4 <= t < start + r["length"] / fps - 1e-4])
        np.testing.assert_allclose(got, want, atol=1e-4)  # LeRobot's tolerance_s
        np.testing.assert_allclose(r[f"videos/{CAMERA}/to_timestamp"], start + r["length"] / fps)

    stats = json.loads((root / "meta/stats.json").read_text())
    for key, f in features.items():
        if f["dtype"] in ("string",):
            continue
        assert set(stats[key]) >= STATS, key
        assert stats[key]["count"] == [sum(TETHER_LENGTHS)] or f["dtype"] == "video", key
        shape = (3, 1, 1) if f["dtype"] == "video" else tuple(f["shape"])
        for s in STATS - {"count"}:
            assert np.asarray(stats[key][s]).shape == shape, (key, s)


# --- LeRobot's loader, both ways -----------------------------------------------------------------

LOAD_SCRIPT = r"""
import json, sys
from lerobot.datasets.lerobot_dataset import LeRobotDataset
root, camera = sys.argv[1], sys.argv[2]
ds = LeRobotDataset("local/interop", root=root,
                    delta_timestamps={camera: [-0.1, 0.0], "action": [0.0, 0.1, 0.2]})
items = []
for i in range(len(ds)):
    it = ds[i]
    items.append({"index": int(it["index"]), "episode_index": int(it["episode_index"]),
                  "task": it["task"], "state": it["observation.state"].tolist(),
                  "action": it["action"].tolist(), "action_is_pad": it["action_is_pad"].tolist(),
                  "image_shape": list(it[camera].shape),
                  "image_mean": (it[camera] * 255).mean((1, 2, 3)).tolist(),
                  "image_is_pad": it[camera + "_is_pad"].tolist()})
print(json.dumps({"len": len(ds), "episodes": ds.num_episodes, "fps": ds.fps, "items": items}))
"""


def lerobot_python() -> str:
    if os.environ.get("LEROBOT_PYTHON"):
        return os.environ["LEROBOT_PYTHON"]
    pytest.importorskip("lerobot")
    return sys.executable


@pytest.mark.slow
@pytest.mark.parametrize("which", ["lerobot_fixture", "tether_written"])
def test_lerobots_loader_reads_it(which, tmp_path):
    """Run with ``LEROBOT_PYTHON=/path/to/venv-with-lerobot/bin/python pytest -m slow``."""
    from tether.policies.sampling import TrainingDataset

    python = lerobot_python()
    root = FIXTURE if which == "lerobot_fixture" else write_tether(tmp_path / "ds")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([python, "-c", LOAD_SCRIPT, str(root), CAMERA], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    ds = Dataset(root)
    assert got["len"] == ds.num_frames and got["episodes"] == len(ds) and got["fps"] == ds.fps
    ours = TrainingDataset(ds, keys=["observation.state", "action", CAMERA],
                           delta_timestamps={CAMERA: [-0.1, 0.0], "action": [0.0, 0.1, 0.2]},
                           cache=tmp_path / "cache")
    b = ours.get(np.arange(len(ours)), np.random.default_rng(0))
    h, w = ds.features[CAMERA]["shape"][:2]
    for i, item in enumerate(got["items"]):
        assert item["index"] == b["index"][i] and item["episode_index"] == b["episode_index"][i]
        assert item["task"] == ds.tasks[b["task_index"][i]]
        np.testing.assert_array_equal(item["state"], b["observation.state"][i])
        np.testing.assert_array_equal(item["action"], b["action"][i])
        assert item["action_is_pad"] == b["action_is_pad"][i].tolist()
        assert item["image_is_pad"] == b[f"{CAMERA}_is_pad"][i].tolist()
        assert item["image_shape"] == [2, 3, h, w]
        np.testing.assert_allclose(item["image_mean"], b[CAMERA][i].mean((1, 2, 3)), atol=0.01)
