"""The LeRobotDataset v3.0 writer and reader: layout, statistics, crash safety, resume."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tether.robot.dataset import Dataset, DatasetError, DatasetExistsError, DatasetWriter
from tether.robot.dataset.stats import feature_stats
from tether.robot.spec import Feature, RobotSpec

SPEC = RobotSpec(
    "toy", 10.0,
    {"observation.state": Feature("float32", (3,), ("a", "b", "c")),
     "observation.images.cam": Feature("uint8", (16, 24, 3), unit="pixel")},
    Feature("float32", (2,), ("x", "y"), low=(-1, -1), high=(1, 1)),
)


def episode(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "observation.state": rng.normal(size=(n, 3)).astype(np.float32),
        # smooth images whose brightness encodes the frame number (noise would not survive H.264)
        "observation.images.cam": np.broadcast_to(
            (20 + 25 * np.arange(n) + seed)[:, None, None, None], (n, 16, 24, 3)
        ).astype(np.uint8),
        "action": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "next.reward": rng.normal(size=n).astype(np.float32),
    }


def test_layout_and_round_trip(tmp_path):
    writer = DatasetWriter(tmp_path / "ds", SPEC, fps=10)
    eps = [episode(5, 0), episode(7, 1), episode(4, 2)]
    for i, ep in enumerate(eps):
        assert writer.add_episode(ep, "pick" if i != 1 else "place") == i
    root = tmp_path / "ds"
    for rel in ("meta/info.json", "meta/stats.json", "meta/tasks.parquet",
                "meta/episodes/chunk-000/file-000.parquet", "data/chunk-000/file-000.parquet",
                "data/chunk-000/file-002.parquet",
                "videos/observation.images.cam/chunk-000/file-001.mp4"):
        assert (root / rel).is_file(), rel
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert info["total_episodes"] == 3 and info["total_frames"] == 16 and info["total_tasks"] == 2
    assert info["features"]["observation.images.cam"]["dtype"] == "video"
    assert info["features"]["observation.state"]["names"] == ["a", "b", "c"]

    ds = Dataset(root)
    assert ds.tasks == ["pick", "place"] and ds.spec == SPEC and len(ds) == 3
    got = ds.episode(1)
    np.testing.assert_array_equal(got["observation.state"], eps[1]["observation.state"])
    np.testing.assert_array_equal(got["action"], eps[1]["action"])
    np.testing.assert_array_equal(got["index"], np.arange(5, 12))
    np.testing.assert_allclose(got["timestamp"], np.arange(7) / 10)
    assert got["task_index"].tolist() == [1] * 7
    assert got["next.done"].tolist() == [False] * 6 + [True]  # filled in: the last frame ends it
    frames = ds.video("observation.images.cam", 1)
    assert frames.shape == (7, 16, 24, 3)
    # lossy codec: close to what was written, frame by frame
    assert np.abs(frames.astype(int) - eps[1]["observation.images.cam"]).mean() < 3
    everything = ds.frames(["action", "episode_index"])
    assert everything["action"].shape == (16, 2)
    assert everything["episode_index"].tolist() == [0] * 5 + [1] * 7 + [2] * 4


def test_tasks_parquet_has_the_task_string_as_pandas_index(tmp_path):
    writer = DatasetWriter(tmp_path / "ds", SPEC, fps=10)
    writer.add_episode(episode(3, 0), "open the drawer")
    table = pq.read_table(tmp_path / "ds/meta/tasks.parquet")
    meta = json.loads(table.schema.metadata[b"pandas"])
    assert meta["index_columns"] == ["task"]
    assert table.column("task").to_pylist() == ["open the drawer"]
    assert table.column("task_index").to_pylist() == [0]


def test_stats_aggregate_to_the_statistics_of_all_frames(tmp_path):
    writer = DatasetWriter(tmp_path / "ds", SPEC, fps=10)
    eps = [episode(n, n) for n in (3, 11, 6)]
    for ep in eps:
        writer.add_episode(ep, "t")
    stats = json.loads((tmp_path / "ds/meta/stats.json").read_text())
    state = np.concatenate([e["observation.state"] for e in eps]).astype(np.float64)
    np.testing.assert_allclose(stats["observation.state"]["mean"], state.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["std"], state.std(0), rtol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["min"], state.min(0))
    assert stats["observation.state"]["count"] == [20]
    assert np.asarray(stats["observation.images.cam"]["mean"]).shape == (3, 1, 1)
    assert set(stats["action"]) >= {"min", "max", "mean", "std", "count", "q01", "q50", "q99"}
    one = feature_stats(eps[0]["observation.images.cam"], is_image=True)
    assert 0 <= one["min"].min() and one["max"].max() <= 1


def test_refuses_an_existing_dataset_unless_resume_or_overwrite(tmp_path):
    DatasetWriter(tmp_path / "ds", SPEC, fps=10).add_episode(episode(3, 0), "t")
    with pytest.raises(DatasetExistsError, match="resume .* overwrite"):
        DatasetWriter(tmp_path / "ds", SPEC, fps=10)
    assert len(DatasetWriter(tmp_path / "ds", SPEC, fps=10, overwrite=True).episodes) == 0


def test_resume_removes_an_unfinished_episode_and_continues(tmp_path):
    root = tmp_path / "ds"
    writer = DatasetWriter(root, SPEC, fps=10)
    writer.add_episode(episode(4, 0), "t")
    writer.add_episode(episode(5, 1), "t")
    # What a process killed while writing episode 2 leaves: its data file, no metadata.
    orphan = root / "data/chunk-000/file-002.parquet"
    orphan.write_bytes(b"half a parquet file")
    (root / "videos/observation.images.cam/chunk-000/file-002.mp4.tmp").write_bytes(b"x")
    assert len(Dataset(root)) == 2  # readers never see it
    resumed = DatasetWriter(root, SPEC, fps=10, resume=True)
    assert not orphan.exists()
    assert resumed.add_episode(episode(6, 2), "u") == 2
    ds = Dataset(root)
    assert [e["length"] for e in ds.episodes] == [4, 5, 6]
    assert ds.tasks == ["t", "u"]
    assert ds.frames(["index"])["index"].tolist() == list(range(15))


def test_resume_with_another_spec_is_refused(tmp_path):
    DatasetWriter(tmp_path / "ds", SPEC, fps=10).add_episode(episode(2, 0), "t")
    other = RobotSpec("toy", 10.0, {"observation.state": Feature("float32", (3,))}, SPEC.action)
    with pytest.raises(ValueError, match="another robot spec"):
        DatasetWriter(tmp_path / "ds", other, fps=10, resume=True)


def test_bad_episode_is_rejected(tmp_path):
    writer = DatasetWriter(tmp_path / "ds", SPEC, fps=10)
    bad = episode(3, 0)
    bad["action"] = bad["action"][:, :1]
    with pytest.raises(ValueError, match=r"action: shape \(3, 1\)"):
        writer.add_episode(bad, "t")
    missing = episode(3, 0)
    del missing["observation.images.cam"]
    with pytest.raises(ValueError, match="missing feature 'observation.images.cam'"):
        writer.add_episode(missing, "t")
    assert len(writer.episodes) == 0


def test_reader_errors(tmp_path):
    with pytest.raises(DatasetError, match="info.json is missing"):
        Dataset(tmp_path)
    DatasetWriter(tmp_path / "ds", SPEC, fps=10).add_episode(episode(2, 0), "t")
    info_path = tmp_path / "ds/meta/info.json"
    info = json.loads(info_path.read_text())
    info["codebase_version"] = "v2.1"
    info_path.write_text(json.dumps(info))
    with pytest.raises(DatasetError, match="v2.1; tether reads v3.0"):
        Dataset(tmp_path / "ds")


def test_info_json_is_the_commit_point(tmp_path):
    root = tmp_path / "ds"
    writer = DatasetWriter(root, SPEC, fps=10)
    writer.add_episode(episode(4, 0), "t")
    writer.add_episode(episode(5, 1), "t")
    info_before = (root / "meta/info.json").read_text()
    writer.add_episode(episode(6, 2), "t")
    # A kill after meta/episodes was replaced but before info.json was: episode 2 not committed.
    (root / "meta/info.json").write_text(info_before)
    (root / "meta/stats.json.tmp").write_text("{")
    assert [e["length"] for e in Dataset(root).episodes] == [4, 5]
    resumed = DatasetWriter(root, SPEC, fps=10, resume=True)
    assert not (root / "data/chunk-000/file-002.parquet").exists()
    assert not (root / "meta/stats.json.tmp").exists()
    assert resumed.add_episode(episode(3, 3), "t") == 2
    assert [e["length"] for e in Dataset(root).episodes] == [4, 5, 3]
