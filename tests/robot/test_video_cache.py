"""VideoCache: decoded once, reused by a second open, invalidated by a change, safe to share."""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import tether.robot.dataset.cache as cache_module
from tether.robot.dataset import Dataset, DatasetError, DatasetWriter
from tether.robot.dataset.cache import VideoCache, decode_frames, default_cache_dir
from tether.robot.spec import Feature, RobotSpec

CAM = "observation.images.cam"
SPEC = RobotSpec(
    "toy", 10.0,
    # odd width: the encoder pads to even sizes, the cache must crop back
    {"observation.state": Feature("float32", (2,)), CAM: Feature("uint8", (12, 17, 3), unit="pixel")},
    Feature("float32", (1,)),
)
FIXTURE = Path(__file__).parents[1] / "fixtures" / "lerobot_v30"


def episode(n: int, level: int) -> dict:
    return {
        "observation.state": np.zeros((n, 2), np.float32),
        CAM: np.broadcast_to((level + 9 * np.arange(n))[:, None, None, None], (n, 12, 17, 3)).astype(np.uint8),
        "action": np.zeros((n, 1), np.float32),
    }


def write(root: Path, levels=(20, 120), n=6, **kwargs) -> Path:
    writer = DatasetWriter(root, SPEC, fps=10, **kwargs)
    for level in levels:
        writer.add_episode(episode(n, level), "task")
    return root


@pytest.fixture
def decodes(monkeypatch):
    """Calls of decode_frames, as (video path, number of frames)."""
    calls = []
    real = cache_module.decode_frames

    def counting(path, times, *args, **kwargs):
        calls.append((Path(path).name, len(times)))
        return real(path, times, *args, **kwargs)

    monkeypatch.setattr(cache_module, "decode_frames", counting)
    return calls


def listing(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")}


def test_frames_match_the_reader_and_a_second_open_reuses_them(tmp_path, decodes):
    root = write(tmp_path / "ds")
    before = listing(root)
    cache = VideoCache(root, cache_dir=tmp_path / "cache")
    assert tmp_path / "cache" in cache.root.parents
    ds = Dataset(root)
    for e in range(2):
        frames = cache.array(CAM, e)
        assert frames.shape == (6, 12, 17, 3) and frames.dtype == np.uint8
        np.testing.assert_array_equal(frames, ds.video(CAM, e)[:, :12, :17])
        np.testing.assert_array_equal(cache.frames(CAM, e, [5, 0, 5]), frames[[5, 0, 5]])
    assert len(decodes) == 2
    cache.array(CAM, 0)
    again = VideoCache(Dataset(root), cache_dir=tmp_path / "cache")
    assert again.root == cache.root
    np.testing.assert_array_equal(again.frames(CAM, 1, [3]), cache.frames(CAM, 1, [3]))
    again.warm()
    assert len(decodes) == 2  # nothing decoded twice, in this object or a new one
    assert listing(root) == before  # the dataset folder is never written


def test_packed_lerobot_episodes_decode_their_own_frames(tmp_path, decodes):
    cache = VideoCache(FIXTURE, cache_dir=tmp_path)
    frames = cache.array("observation.images.front", 2)  # frames 22..29 of the shared mp4
    assert frames.shape == (8, 16, 16, 3) and decodes == [("file-000.mp4", 8)]
    np.testing.assert_allclose(frames.mean((1, 2, 3)), 20 + 7 * np.arange(22, 30), atol=2)


def test_a_rewritten_dataset_is_decoded_again_and_appending_keeps_old_episodes(tmp_path, decodes):
    root = write(tmp_path / "ds")
    cache = VideoCache(root, cache_dir=tmp_path / "cache")
    old_path = cache.path(CAM, 0)
    assert cache.frames(CAM, 0, [0])[0, 0, 0, 0] == pytest.approx(20, abs=2)

    write(root, levels=(200, 120), overwrite=True)
    fresh = VideoCache(root, cache_dir=tmp_path / "cache")
    assert fresh.path(CAM, 0) != old_path
    assert fresh.frames(CAM, 0, [0])[0, 0, 0, 0] == pytest.approx(200, abs=2)
    assert not old_path.exists()  # the stale entry went when its successor was written

    fresh.warm()
    n = len(decodes)
    writer = DatasetWriter(root, SPEC, fps=10, resume=True)
    writer.add_episode(episode(4, 60), "task")
    appended = VideoCache(root, cache_dir=tmp_path / "cache")
    appended.warm()
    assert len(decodes) == n + 1  # only the new episode
    assert appended.array(CAM, 2).shape == (4, 12, 17, 3)


def test_concurrent_first_reads_decode_once(tmp_path, decodes):
    root = write(tmp_path / "ds", levels=(50,), n=20)
    cache = VideoCache(root, cache_dir=tmp_path / "cache")
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: np.array(cache.array(CAM, 0)), range(6)))
    assert len(decodes) == 1
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    assert not list(cache.root.rglob("*.tmp*"))


def test_pickles_without_its_memory_maps(tmp_path):
    cache = VideoCache(write(tmp_path / "ds"), cache_dir=tmp_path / "cache")
    cache.array(CAM, 1)
    data = pickle.dumps(cache)
    assert len(data) < 50_000  # the decoded frames did not travel along
    np.testing.assert_array_equal(pickle.loads(data).frames(CAM, 1, [2]), cache.frames(CAM, 1, [2]))


def test_default_location_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("TETHER_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("TETHER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "tether" / "videos"
    root = write(tmp_path / "ds")
    cache = VideoCache(root)
    assert (tmp_path / "xdg" / "tether" / "videos") in cache.root.parents
    with pytest.raises(KeyError, match="not a video feature"):
        cache.array("observation.state", 0)
    video = root / "videos" / CAM / "chunk-000" / "file-000.mp4"
    with pytest.raises(DatasetError, match="no frame within"):
        decode_frames(video, np.array([0.0, 0.05]), (12, 17))  # 0.05 s is between frames at 10 fps
