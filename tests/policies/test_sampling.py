"""Training samples: timestamp windows with pads, hindsight goals, batches with camera frames."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from tether.policies.sampling import GoalSampler, TrainingDataset, delta_indices, window_indices
from tether.robot.dataset import DatasetWriter
from tether.robot.spec import Feature, RobotSpec

CAM = "observation.images.cam"
SPEC = RobotSpec(
    "toy", 10.0,
    {"observation.state": Feature("float32", (2,)), CAM: Feature("uint8", (8, 8, 3), unit="pixel")},
    Feature("float32", (1,)),
)
LENGTHS = (5, 7, 4)
STARTS = np.cumsum((0, *LENGTHS[:-1]))
N = sum(LENGTHS)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Three episodes where state = [global row, episode], action = row + 0.5, image grey = 10 + 12 row."""
    root = tmp_path_factory.mktemp("sampling") / "ds"
    writer = DatasetWriter(root, SPEC, fps=10)
    for e, (start, n) in enumerate(zip(STARTS, LENGTHS)):
        rows = np.arange(start, start + n)
        writer.add_episode({
            "observation.state": np.stack([rows, np.full(n, e)], 1).astype(np.float32),
            CAM: np.broadcast_to((10 + 12 * rows)[:, None, None, None], (n, 8, 8, 3)).astype(np.uint8),
            "action": (rows + 0.5)[:, None].astype(np.float32),
        }, "play")
    return root


def brute_force_window(row: int, offsets) -> tuple[list[int], list[bool]]:
    """LeRobot's _get_query_indices, frame by frame."""
    e = int(np.searchsorted(STARTS, row, side="right") - 1)
    start, end = STARTS[e], STARTS[e] + LENGTHS[e]
    return ([max(start, min(end - 1, row + d)) for d in offsets],
            [not start <= row + d < end for d in offsets])


def test_delta_timestamps_become_frame_offsets():
    got = delta_indices({"observation.state": [-0.1, 0.0], "action": [0.0, 0.1, 0.2, 0.3]}, fps=10)
    assert got["observation.state"].tolist() == [-1, 0] and got["action"].tolist() == [0, 1, 2, 3]
    assert delta_indices({"action": [0.0, 0.0125, 0.025]}, fps=80)["action"].tolist() == [0, 1, 2]
    assert delta_indices({"a": [1 / 15 + 5e-5]}, fps=15)["a"].tolist() == [1]  # within 1e-4 s


def test_offsets_off_the_frame_grid_raise():
    with pytest.raises(ValueError, match=r"multiples of 1/fps.*'action': \[0.05, 0.15\]"):
        delta_indices({"observation.state": [0.0], "action": [0.0, 0.05, 0.1, 0.15]}, fps=10)
    with pytest.raises(ValueError, match="empty"):
        delta_indices({"action": []}, fps=10)
    with pytest.raises(ValueError, match="fps"):
        delta_indices({"action": [0.0]}, fps=0)


def test_windows_clamp_to_the_episode_and_flag_pads():
    rows = np.arange(N)
    e = np.searchsorted(STARTS, rows, side="right") - 1
    start, end = STARTS[e], STARTS[e] + np.asarray(LENGTHS)[e]
    offsets = np.array([-2, -1, 0, 1, 3])
    idx, pad = window_indices(rows, start, end, offsets)
    for r in rows:
        want_idx, want_pad = brute_force_window(r, offsets)
        assert idx[r].tolist() == want_idx and pad[r].tolist() == want_pad, r


def test_training_dataset_windows_at_episode_boundaries(root, tmp_path):
    ds = TrainingDataset(
        root, keys=["observation.state", "action", CAM],
        delta_timestamps={"observation.state": [-0.1, 0.0], "action": [0.0, 0.1, 0.2], CAM: [-0.2, 0.0]},
        cache=tmp_path / "cache",
    )
    assert len(ds) == N
    for r in range(N):
        item = ds[r]
        for key, offsets in (("observation.state", [-1, 0]), ("action", [0, 1, 2]), (CAM, [-2, 0])):
            want_idx, want_pad = brute_force_window(r, offsets)
            assert item[f"{key}_is_pad"].tolist() == want_pad, (r, key)
            if key == "action":
                np.testing.assert_array_equal(item[key][:, 0], np.array(want_idx) + 0.5)
            elif key == CAM:
                assert item[key].shape == (2, 8, 8, 3) and item[key].dtype == np.uint8
                np.testing.assert_allclose(item[key].mean((1, 2, 3)), 10 + 12 * np.array(want_idx), atol=2)
            else:
                np.testing.assert_array_equal(item[key][:, 0], want_idx)
        assert item["index"] == r and item["frame_index"] == r - STARTS[item["episode_index"]]
    # the last frame of episode 0 and the first of episode 1, side by side
    assert ds[4]["action_is_pad"].tolist() == [False, True, True]
    assert ds[5]["observation.state_is_pad"].tolist() == [True, False]


def test_sample_is_the_vectorized_getitem(root, tmp_path):
    ds = TrainingDataset(root, delta_timestamps={"action": [0.0, 0.1]}, cache=tmp_path / "cache")
    assert set(ds.keys) == {"observation.state", CAM, "action", "next.reward", "next.success", "next.done"}
    batch = ds.sample(64, np.random.default_rng(0))
    assert batch["action"].shape == (64, 2, 1) and batch[CAM].shape == (64, 8, 8, 3)
    assert batch["action_is_pad"].shape == (64, 2) and batch["index"].shape == (64,)
    rows = batch["index"]
    for i in (0, 17, 63):
        item = ds[int(rows[i])]
        for key, value in item.items():
            np.testing.assert_array_equal(batch[key][i], value, err_msg=key)


def test_hindsight_goals_are_in_the_same_episodes_future(root):
    ds = TrainingDataset(root, keys=["observation.state"], goals=GoalSampler(min_offset=0),
                         goal_keys=["observation.state"])
    rng = np.random.default_rng(0)
    for sampler in (GoalSampler(min_offset=0), GoalSampler(min_offset=2, max_offset=3),
                    GoalSampler(min_offset=1, gamma=0.5), GoalSampler.play_lmp(fps=10)):
        ds.goals = sampler
        b = ds.sample(2000, rng)
        goal_row = b["goal.observation.state"][:, 0].astype(int)
        assert (b["goal.observation.state"][:, 1] == b["episode_index"]).all()
        assert (goal_row >= b["index"]).all()
        assert (b["goal_offset"] == goal_row - b["index"]).all()
        last = STARTS[b["episode_index"]] + np.asarray(LENGTHS)[b["episode_index"]] - 1
        room = last - b["index"]
        lo = sampler.min_offset
        # with room, offsets respect [min, max]; without, the goal is the episode's last frame
        ok = np.where(room >= lo, b["goal_offset"] >= lo, goal_row == last)
        assert ok.all(), sampler
        if sampler.max_offset is not None:
            assert (b["goal_offset"] <= sampler.max_offset).all()
    ds.goals = GoalSampler(min_offset=0)
    b = ds.sample(4000, rng)
    # uniform over [t, last]: from the first frame of episode 1, each of its 7 frames ~1/7
    first = b["index"] == STARTS[1]
    counts = np.bincount(b["goal_offset"][first], minlength=7)
    assert counts.min() > 0 and len(counts) == 7


def test_icvf_mix_of_random_future_and_current_goals(root):
    assert GoalSampler.play_lmp(fps=30).min_offset == 31 and GoalSampler.play_lmp(30).max_offset == 63
    ds = TrainingDataset(root, keys=["action"], goals=GoalSampler.icvf(), goal_keys=["observation.state"])
    b = ds.sample(20_000, np.random.default_rng(1))
    goal_row = b["goal.observation.state"][:, 0].astype(int)
    current = goal_row == b["index"]
    other_episode = b["goal.observation.state"][:, 1] != b["episode_index"]
    # away from an episode's last frame (where future goals are the frame too): 20% current,
    # plus the random goals that hit the frame itself; 30% random, most in another episode
    last = STARTS[b["episode_index"]] + np.asarray(LENGTHS)[b["episode_index"]] - 1
    assert 0.19 < current[b["index"] != last].mean() < 0.25
    assert 0.15 < other_episode.mean() < 0.3
    assert (b["goal_offset"][other_episode] == -1).all()
    with pytest.raises(ValueError, match="sum to 1"):
        GoalSampler(p_future=0.5)
    with pytest.raises(ValueError, match="gamma"):
        GoalSampler(gamma=1.0)


def test_getitem_goals_differ_between_dataloader_workers(root):
    ds = TrainingDataset(root, keys=["action"], goals=GoalSampler(min_offset=0))
    draws = []
    for worker_seed in (0, 1):  # what torch's DataLoader does in each worker
        random.seed(worker_seed)
        draws.append([int(ds[0]["goal_offset"]) for _ in range(20)])
    assert draws[0] != draws[1]
    assert all(0 <= g < LENGTHS[0] for g in draws[0] + draws[1])


def test_episode_subset_and_torch_collate(root, tmp_path):
    torch = pytest.importorskip("torch")
    ds = TrainingDataset(root, episodes=[2, 0], keys=["observation.state", CAM],
                         goals=GoalSampler(p_future=0, p_random=1), goal_keys=[CAM],
                         cache=tmp_path / "cache")
    assert len(ds) == LENGTHS[2] + LENGTHS[0]
    b = ds.sample(500, np.random.default_rng(0))
    assert set(b["episode_index"].tolist()) == {0, 2}
    goal_rows = (b[f"goal.{CAM}"].mean((1, 2, 3)) - 10) / 12
    assert set(np.round(goal_rows).astype(int)) <= set(range(0, 5)) | set(range(12, 16))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)
    batch = next(iter(loader))
    assert batch[CAM].shape == (4, 8, 8, 3) and batch[CAM].dtype == torch.uint8
    assert batch["observation.state"].shape == (4, 2)
    with pytest.raises(ValueError, match="unknown features"):
        TrainingDataset(root, keys=["observation.nope"])
    with pytest.raises(ValueError, match="not requested"):
        TrainingDataset(root, keys=["action"], delta_timestamps={"observation.state": [0.0]})
