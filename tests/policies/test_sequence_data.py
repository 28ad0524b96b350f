"""BESO/GCBC training data (windows, chunks, pads, task and hindsight goals), and the whole path
train -> export -> runner for a play-data policy conditioned on goal observations."""

import json

import numpy as np
import onnx
import pytest
import torch

from tether.launch.cli import main as cli
from tether.policies.checkpoint import load_policy
from tether.policies.configs import GoalConfig
from tether.policies.sequence_data import SequenceData
from tether.robot.dataset import DatasetWriter
from tether.robot.drivers.pointmass import pointmass_spec
from tether.robot.runner import PolicyRunner
from tether.robot.spec import SpecError


@pytest.fixture(scope="module")
def play(tmp_path_factory):
    """Two episodes (12 and 9 frames) whose state encodes (episode, frame)."""
    root = tmp_path_factory.mktemp("play") / "ds"
    writer = DatasetWriter(root, pointmass_spec(10.0), fps=10)
    for e, n in enumerate((12, 9)):
        frame = np.arange(n, dtype=np.float32)
        writer.add_episode({
            "observation.state": np.stack([np.full(n, e, np.float32), frame, frame / 10, -frame], 1),
            "action": np.stack([frame / n, np.full(n, e, np.float32)], 1),
        }, "play")
    return root


def test_windows_chunks_and_pads(play):
    data = SequenceData.from_dataset(play, window=2, horizon=3, goal=GoalConfig())
    rows = np.array([0, 11, 12])  # first and last frame of episode 0, first of episode 1
    b = data.batch(rows, np.random.default_rng(0))
    assert b["obs"].shape == (3, 2, 4) and b["actions"].shape == (3, 4, 2) and b["goal"].shape == (3, 1)
    pad = b["action_pad"].numpy()
    assert pad[0].tolist() == [True, False, False, False]  # before the episode's first frame
    assert pad[1].tolist() == [False, False, True, True]  # past its last
    # normalized values map back to the frames: the window's last observation is the frame itself
    obs = b["obs"].numpy() * data.normalizer.obs_std + data.normalizer.obs_mean
    assert obs[:, -1, 1].round().tolist() == [0, 11, 0] and obs[2, -1, 0].round() == 1


def test_hindsight_goals_come_from_the_same_episodes_future(play):
    goal = GoalConfig(kind="hindsight", min_offset_s=0.2, max_offset_s=0.5, dims=(0, 1))
    data = SequenceData.from_dataset(play, window=1, horizon=1, goal=goal)
    assert data.goal_dims == (0, 1) and data.goal_dim == 2
    rows = np.arange(len(data.data)).repeat(20)
    b = data.batch(rows, np.random.default_rng(1))
    n = data.normalizer
    g = b["goal"].numpy() * n.obs_std[:2] + n.obs_mean[:2]
    o = b["obs"].numpy()[:, -1, :2] * n.obs_std[:2] + n.obs_mean[:2]
    assert np.allclose(g[:, 0], o[:, 0])  # same episode
    ahead = (g[:, 1] - o[:, 1]).round()
    last = np.where(o[:, 0].round() == 0, 11, 8)
    assert np.all((ahead >= 2) & (ahead <= 5) | (g[:, 1].round() == last))
    with pytest.raises(ValueError, match="goal dims"):
        SequenceData.from_dataset(play, 1, 1, GoalConfig(kind="hindsight", dims=(9,)))


def test_hindsight_offsets_are_uniform_or_geometric(play):
    """``gamma`` switches the offsets from uniform in [1, 8] frames (mean 4.5) to Geometric(0.5)
    frames (mean 2), both within the range."""

    def offsets(gamma):
        goal = GoalConfig(kind="hindsight", min_offset_s=0.1, max_offset_s=0.8, gamma=gamma, dims=(1,))
        data = SequenceData.from_dataset(play, window=1, horizon=1, goal=goal)
        b = data.batch(np.zeros(4000, dtype=np.int64), np.random.default_rng(2))  # frame 0 of episode 0
        n = data.normalizer
        return (b["goal"].numpy()[:, 0] * n.obs_std[1] + n.obs_mean[1]).round()

    uniform, geometric = offsets(None), offsets(0.5)
    assert uniform.min() == 1 and uniform.max() == 8 and abs(uniform.mean() - 4.5) < 0.15
    assert geometric.min() == 1 and geometric.max() <= 8 and abs(geometric.mean() - 2.0) < 0.1
    assert abs(np.mean(geometric == 1) - 0.5) < 0.03  # P(offset = 1) = 1 - gamma
    with pytest.raises(ValueError, match="gamma must be in"):
        offsets(1.5)


def test_a_steps_batch_depends_on_the_step_alone(play):
    """A resumed run must draw the batches an uninterrupted one drew (runs span sessions)."""
    goal = GoalConfig(kind="hindsight", min_offset_s=0.1, max_offset_s=0.5)
    data = SequenceData.from_dataset(play, window=1, horizon=2, goal=goal)
    first, again = data.batches(16, seed=3), data.batches(16, seed=3)
    first(0), first(1)  # a fresh sampler asked for step 2 straight away must not care
    for key, value in first(2).items():
        assert torch.equal(value, again(2)[key]), key
    assert not torch.equal(first(2)["goal"], first(3)["goal"])
    assert not torch.equal(first(2)["goal"], data.batches(16, seed=4)(2)["goal"])


def test_gcbc_on_play_data_trains_exports_and_runs_on_goal_observations(play, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    cli(["train", str(play), "--out", str(out), "--algo", "gcbc", "--goal.kind", "hindsight",
         "--goal.min-offset-s", "0.1", "--goal.max-offset-s", "0.3", "--beso.window", "2",
         "--beso.action-horizon", "3", "--beso.d-model", "32", "--beso.n-layers", "1",
         "--beso.n-heads", "2", "--optim.steps", "30", "--optim.batch-size", "16",
         "--optim.warmup-steps", "5", "--optim.checkpoint-every", "20"])
    # the EMA policy of the last checkpoint (step 30) is the final one
    mid, final = load_policy(out / "checkpoints" / "policy.pt"), load_policy(out / "policy.pt")
    for name, value in final.model.state_dict().items():
        assert torch.equal(value, mid.model.state_dict()[name]), name
    cli(["export", str(out / "policy.pt")])
    path = out / "policy.onnx"
    meta = json.loads({p.key: p.value for p in onnx.load(path).metadata_props}["tether.policy"])
    assert meta["kind"] == "gcbc" and meta["goal"]["kind"] == "observation"
    assert meta["action_horizon"] == 3
    runner = PolicyRunner(path)
    assert runner.goal_conditioned_on_observations and "observation.goal" in runner.spec.observation
    runner.reset()
    obs = {"observation.state": np.zeros(4, np.float32), "observation.goal": np.ones(4, np.float32)}
    assert runner.act_chunk(obs).shape == (3, 2)
    with pytest.raises(SpecError, match="observation.goal"):
        runner.act({"observation.state": np.zeros(4, np.float32)})
