"""Merging and splitting datasets, and recomputing their statistics."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tether.robot.dataset import (
    Dataset, DatasetEditError, DatasetError, DatasetWriter, merge, recompute_stats, split,
)
from tether.robot.dataset.edit import fraction_split, load_stats, parse_episodes, task_split
from tether.robot.spec import Feature, RobotSpec

FIXTURE = Path(__file__).parents[1] / "fixtures" / "lerobot_v30"

# An odd image width: the encoder pads it to an even one, and rewriting must crop it back.
SPEC = RobotSpec(
    "toy", 10.0,
    {"observation.state": Feature("float32", (3,), ("a", "b", "c")),
     "observation.images.cam": Feature("uint8", (16, 21, 3), unit="pixel")},
    Feature("float32", (2,), ("x", "y"), low=(-1, -1), high=(1, 1)),
)


def episode(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "observation.state": rng.normal(size=(n, 3)).astype(np.float32),
        # smooth images whose brightness encodes the frame (noise would not survive H.264)
        "observation.images.cam": np.broadcast_to(
            (20 + 25 * np.arange(n) + seed)[:, None, None, None], (n, 16, 21, 3)
        ).astype(np.uint8),
        "action": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "next.reward": rng.normal(size=n).astype(np.float32),
    }


def write(root, episodes, spec=SPEC, fps=10):
    writer = DatasetWriter(root, spec, fps=fps)
    for ep, task in episodes:
        writer.add_episode(ep, task)
    return Dataset(root)


def assert_same_episode(got: Dataset, i: int, want: dict):
    data = got.episode(i)
    for key in ("observation.state", "action", "next.reward"):
        np.testing.assert_array_equal(data[key], want[key])
    video = got.video("observation.images.cam", i)[:, :16, :21]
    assert len(video) == len(want["action"])
    # decoded and encoded once more: still close, frame by frame
    assert np.abs(video.astype(int) - want["observation.images.cam"]).mean() < 4


def test_merge_reindexes_tasks_and_frames(tmp_path):
    a = [(episode(4, 0), "pick"), (episode(6, 1), "place")]
    b = [(episode(5, 2), "place"), (episode(3, 3), "push")]
    write(tmp_path / "a", a)
    write(tmp_path / "b", b)
    progress = []
    merged = merge([tmp_path / "a", tmp_path / "b"], tmp_path / "m", on_episode=lambda *p: progress.append(p))

    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert len(merged) == 4 and merged.num_frames == 18
    assert merged.tasks == ["pick", "place", "push"] and merged.spec == SPEC and merged.fps == 10
    for i, (ep, _) in enumerate(a + b):
        assert_same_episode(merged, i, ep)
    every = merged.frames(["index", "episode_index", "task_index", "frame_index"])
    assert every["index"].tolist() == list(range(18))
    assert every["episode_index"].tolist() == [0] * 4 + [1] * 6 + [2] * 5 + [3] * 3
    assert every["task_index"].tolist() == [0] * 4 + [1] * 6 + [1] * 5 + [2] * 3
    assert every["frame_index"][4:10].tolist() == list(range(6))
    assert [e["tasks"] for e in merged.episodes] == [["pick"], ["place"], ["place"], ["push"]]

    stats = json.loads((tmp_path / "m/meta/stats.json").read_text())
    state = np.concatenate([ep["observation.state"] for ep, _ in a + b]).astype(np.float64)
    np.testing.assert_allclose(stats["observation.state"]["mean"], state.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["max"], state.max(0))
    assert stats["action"]["count"] == [18]


def test_merge_refuses_mismatched_datasets(tmp_path):
    write(tmp_path / "a", [(episode(3, 0), "t")])
    renamed = RobotSpec("toy", 10.0, {**SPEC.observation,
                                      "observation.state": Feature("float32", (3,), ("a", "b", "z"))},
                        SPEC.action)
    write(tmp_path / "names", [(episode(3, 1), "t")], spec=renamed)
    write(tmp_path / "fps", [(episode(3, 1), "t")], fps=20)
    with pytest.raises(DatasetEditError, match=r"spec\.observation\.observation\.state\.names: "
                                               r"\['a', 'b', 'c'\] vs \['a', 'b', 'z'\]"):
        merge([tmp_path / "a", tmp_path / "names"], tmp_path / "m")
    with pytest.raises(DatasetEditError, match="fps: 10 vs 20"):
        merge([tmp_path / "a", tmp_path / "fps"], tmp_path / "m")
    with pytest.raises(DatasetEditError, match="is one of the input datasets"):
        merge([tmp_path / "a", tmp_path / "a"], tmp_path / "a")
    with pytest.raises(DatasetError, match="is not a dataset"):
        merge([tmp_path / "a", tmp_path / "missing"], tmp_path / "m")
    assert not (tmp_path / "m").exists()  # nothing written before every check passed


def test_split_by_episode_ranges_round_trips(tmp_path):
    eps = [(episode(3 + i, i), "pick" if i % 2 else "place") for i in range(5)]
    write(tmp_path / "src", eps)
    progress = []
    train, val = split(tmp_path / "src", [tmp_path / "train", tmp_path / "val"],
                       [parse_episodes("0:3", 5), parse_episodes("3:", 5)], on_episode=lambda *p: progress.append(p))
    assert progress == [(k, 5) for k in range(1, 6)]  # counted over both outputs
    assert len(train) == 3 and len(val) == 2
    assert train.tasks == ["place", "pick"] and val.tasks == ["pick", "place"]
    assert_same_episode(train, 2, eps[2][0])
    assert_same_episode(val, 0, eps[3][0])
    assert val.frames(["index"])["index"].tolist() == list(range(6 + 7))
    assert val.frames(["task_index"])["task_index"].tolist() == [0] * 6 + [1] * 7
    # and back together: the original episodes in their original order
    again = merge([tmp_path / "train", tmp_path / "val"], tmp_path / "again")
    for i, (ep, _) in enumerate(eps):
        np.testing.assert_array_equal(again.episode(i)["action"], ep["action"])


def test_split_rejects_bad_selections(tmp_path):
    write(tmp_path / "src", [(episode(3, i), "t") for i in range(4)])
    outs = [tmp_path / "x", tmp_path / "y"]
    with pytest.raises(DatasetEditError, match="episode 2 is in two selections"):
        split(tmp_path / "src", outs, [[0, 1, 2], [2, 3]])
    with pytest.raises(DatasetEditError, match="episode 4 is out of range: .* has 4 episodes"):
        split(tmp_path / "src", outs, [[0], [4]])
    with pytest.raises(DatasetEditError, match="selection 1 .* holds no episode"):
        split(tmp_path / "src", outs, [[0], []])
    with pytest.raises(DatasetEditError, match="2 output folders for 1 episode selections"):
        split(tmp_path / "src", outs, [[0]])
    with pytest.raises(DatasetEditError, match="episode 9 in '0:9' is out of range"):
        parse_episodes("0:9", 4)
    with pytest.raises(DatasetEditError, match="bad episode selection"):
        parse_episodes("a:b", 4)
    assert not any(p.exists() for p in outs)


def test_selection_helpers(tmp_path):
    assert parse_episodes("0:2,5,-1", 8) == [0, 1, 5, 7] and parse_episodes(":-6", 8) == [0, 1]
    parts = fraction_split(10, [0.7, 0.2, 0.1], seed=3)
    assert [len(p) for p in parts] == [7, 2, 1]
    assert sorted(sum(parts, [])) == list(range(10)) and all(p == sorted(p) for p in parts)
    assert fraction_split(10, [0.7, 0.2, 0.1], seed=3) == parts != fraction_split(10, [0.7, 0.2, 0.1], seed=4)
    assert [len(p) for p in fraction_split(10, [0.55, 0.45])] == [6, 4]  # largest remainder
    assert sum(map(len, fraction_split(10, [0.5, 0.2]))) == 7  # the rest is left out
    with pytest.raises(DatasetEditError, match="sum to at most 1"):
        fraction_split(10, [0.8, 0.3])
    with pytest.raises(DatasetEditError, match="a part would be empty"):
        fraction_split(3, [0.9, 0.1])
    ds = write(tmp_path / "src", [(episode(2, i), t) for i, t in enumerate("abab")])
    assert task_split(ds) == {"a": [0, 2], "b": [1, 3]}


def test_recompute_stats_rebuilds_what_the_writer_wrote(tmp_path):
    write(tmp_path / "ds", [(episode(4, 0), "t"), (episode(7, 1), "t")])
    before = load_stats(tmp_path / "ds")
    episode_before = Dataset(tmp_path / "ds").episode_stats(1)
    (tmp_path / "ds/meta/stats.json").unlink()
    with pytest.raises(DatasetError, match="no meta/stats.json"):
        load_stats(tmp_path / "ds")
    returned = recompute_stats(tmp_path / "ds")
    after = load_stats(tmp_path / "ds")
    assert set(after) == set(before) == set(returned)
    for key in ("observation.state", "action", "next.reward", "index", "timestamp"):
        for stat in before[key]:
            np.testing.assert_allclose(after[key][stat], before[key][stat], rtol=1e-6, err_msg=f"{key} {stat}")
    # images: recomputed from the decoded video, which is close to the frames the writer saw
    np.testing.assert_allclose(after["observation.images.cam"]["mean"],
                               before["observation.images.cam"]["mean"], atol=0.02)
    episode_after = Dataset(tmp_path / "ds").episode_stats(1)
    np.testing.assert_allclose(episode_after["action"]["std"], episode_before["action"]["std"], rtol=1e-6)
    assert episode_after["observation.images.cam"]["count"].tolist() == [7]


def test_recompute_stats_of_a_lerobot_dataset(tmp_path):
    """Episodes packed in one data file and one video, as LeRobot writes them; no tether spec."""
    root = shutil.copytree(FIXTURE, tmp_path / "lerobot")
    before = load_stats(root)
    after = recompute_stats(root)
    # exact for these; quantiles are averaged over episodes (as LeRobot aggregates them), while
    # the fixture's were taken over all frames at once
    for key in ("observation.state", "action", "index"):
        for stat in ("min", "max", "mean", "std", "count"):
            np.testing.assert_allclose(after[key][stat], before[key][stat], rtol=1e-6, err_msg=f"{key} {stat}")
    ds = Dataset(root)
    assert [e["length"] for e in ds.episodes] == [10, 12, 8]
    np.testing.assert_allclose(ds.episode_stats(1)["index"]["mean"], [15.5])  # frames 10..21
    with pytest.raises(DatasetEditError, match="has no tether robot spec"):
        merge([root], tmp_path / "m")
