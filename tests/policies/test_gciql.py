"""GCIQL (OGBench's reference): hindsight goal sampling, loss shapes, the critic frozen in the
actor's loss, ONNX parity with observation goals, bad settings in one line, and a short training
run on a recorded dataset evaluated through the ONNX runner's goal input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from tether.policies.configs import GciqlConfig, TrainConfig  # noqa: E402
from tether.policies.data import Normalizer  # noqa: E402
from tether.policies.gciql import (  # noqa: E402
    GoalData, Gciql, check_ratios, export_gciql, sample_goals, unit_gaussian_log_prob,
)

S, A = 6, 3
SMALL = GciqlConfig(hidden=(32, 32))


def _episodes(lengths=(50, 80, 70)):
    final = np.concatenate([np.full(n, sum(lengths[: i + 1]) - 1) for i, n in enumerate(lengths)])
    return np.asarray(final, np.int64)


def test_goal_sampling_ratios_and_same_trajectory():
    final = _episodes()
    n = len(final)
    rows = np.arange(n)
    idxs = np.random.default_rng(0).choice(rows[rows < final], 20000)
    rng = np.random.default_rng(1)
    goals = sample_goals(idxs, final, n, 0.2, 0.5, True, 0.99, rng)
    cur = goals == idxs
    same_ep_later = (goals > idxs) & (goals <= final[idxs])
    # 0.2 current; 0.5 later in the episode; 0.3 random rows (a few of which land later too)
    assert abs(cur.mean() - 0.2) < 0.02
    assert 0.48 < same_ep_later.mean() < 0.60
    assert (goals[~cur & same_ep_later] <= final[idxs][~cur & same_ep_later]).all()
    # pure trajectory goals, geometric: never past the episode's end, mean offset ~ 1/(1-gamma) capped
    traj = sample_goals(idxs, final, n, 0.0, 1.0, True, 0.9, np.random.default_rng(2))
    assert ((traj > idxs) & (traj <= final[idxs])).all()
    far = final[idxs] - idxs > 60
    assert abs((traj - idxs)[far].mean() - 10) < 1.0
    # uniform: spread over the rest of the episode
    uni = sample_goals(idxs, final, n, 0.0, 1.0, False, 0.99, np.random.default_rng(3))
    assert ((uni > idxs) & (uni <= final[idxs])).all()
    frac = (uni - idxs)[far] / (final[idxs] - idxs)[far]
    assert abs(frac.mean() - 0.5) < 0.03


def _batch(b=16):
    g = torch.Generator().manual_seed(0)
    success = (torch.rand(b, generator=g) < 0.3).float()
    return {"obs": torch.randn(b, 1, S, generator=g), "next_obs": torch.randn(b, 1, S, generator=g),
            "actions": torch.rand(b, A, generator=g) * 2 - 1, "value_goal": torch.randn(b, S, generator=g),
            "actor_goal": torch.randn(b, S, generator=g), "reward": success - 1, "mask": 1 - success}


@pytest.mark.parametrize("actor_loss", ["ddpgbc", "awr"])
def test_loss_shapes_and_gradients(actor_loss):
    torch.manual_seed(0)
    model = Gciql(dataclasses.replace(SMALL, actor_loss=actor_loss), S, A)
    batch = _batch()
    assert model.v(batch["obs"], batch["value_goal"]).shape == (16,)
    assert all(q.shape == (16,) for q in model.q(batch["obs"], batch["value_goal"], batch["actions"]))
    assert model.actor(batch["obs"], batch["actor_goal"]).shape == (16, A)
    loss = model.loss(**batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None for p in model.target.parameters())
    assert model.actor.net[0].weight.grad.abs().sum() > 0
    assert model.value[0].weight.grad.abs().sum() > 0
    assert {"value_loss", "critic_loss", "actor_loss"} <= set(model.metrics)


def test_actor_loss_does_not_train_the_critics():
    torch.manual_seed(0)
    model = Gciql(SMALL, S, A)
    batch = _batch()
    mean = model.actor.mean(batch["obs"], batch["actor_goal"])
    q = torch.minimum(*model.q(batch["obs"], batch["actor_goal"], mean, frozen=True))
    q.mean().backward()
    assert all(p.grad is None for p in model.q1.parameters())
    assert model.actor.net[0].weight.grad.abs().sum() > 0


def test_expectile_value_is_an_upper_expectile():
    # with critics fixed at Q and V trained alone, V -> the 0.9-expectile of Q over the actions
    torch.manual_seed(0)
    model = Gciql(dataclasses.replace(SMALL, hidden=(16,)), S, A)
    obs, goal = torch.zeros(256, 1, S), torch.zeros(256, S)
    q = torch.linspace(-10, 0, 256)
    opt = torch.optim.Adam(model.value.parameters(), lr=3e-2)
    from tether.policies.iql import expectile_loss

    for _ in range(150):
        opt.zero_grad()
        expectile_loss(q - model.v(obs, goal), 0.9).backward()
        opt.step()
    v = float(model.v(obs[:1], goal[:1]).detach())
    assert v > float(q.mean()) + 2  # well above the mean (-5): an upper expectile


def test_unit_gaussian_log_prob():
    mean, a = torch.zeros(2, 3), torch.ones(2, 3)
    ref = torch.distributions.Normal(mean, 1.0).log_prob(a).sum(-1)
    assert torch.allclose(unit_gaussian_log_prob(mean, a), ref)


def test_export_parity_with_observation_goals(tmp_path):
    from tether.robot.runner import PolicyRunner
    from tether.robot.spec import Feature, RobotSpec

    torch.manual_seed(0)
    model = Gciql(SMALL, S, A).eval()
    rng = np.random.default_rng(0)
    normalizer = Normalizer.fit(rng.normal(3, 2, (100, S)).astype(np.float32),
                                rng.uniform(-1, 1, (100, A)).astype(np.float32))
    spec = RobotSpec("test", 20.0, {"observation.state": Feature("float32", (S,))},
                     Feature("float32", (A,), low=(-1.0,) * A, high=(1.0,) * A), tasks=("play",))
    path, diff = export_gciql(model.actor, normalizer, spec, ["play"], tmp_path / "policy.onnx")
    assert diff <= 1e-4
    runner = PolicyRunner(path)
    assert runner.goal_conditioned_on_observations
    state = rng.normal(3, 2, S).astype(np.float32)
    goal = rng.normal(3, 2, S).astype(np.float32)
    runner.reset("task1")
    action = runner.act({"observation.state": state, "observation.goal": goal})
    with torch.no_grad():
        o = torch.from_numpy(normalizer.obs(state)[None, None].astype(np.float32))
        g = torch.from_numpy(normalizer.obs(goal)[None].astype(np.float32))
        ref = model.actor(o, g).numpy()[0] * normalizer.action_half_range + normalizer.action_center
    assert np.abs(np.asarray(action).reshape(-1) - np.clip(ref, -1, 1)).max() <= 1e-4


@pytest.mark.parametrize("field,value,message", [
    ("value_p_randomgoal", 0.5, "value goal probabilities"),
    ("actor_p_curgoal", -0.1, "actor goal probabilities"),
    ("expectile", 1.5, "expectile"),
    ("alpha", -1.0, "alpha"),
])
def test_bad_settings_are_one_line(field, value, message):
    with pytest.raises(ValueError, match=message) as e:
        check_ratios(dataclasses.replace(GciqlConfig(), **{field: value}))
    assert "\n" not in str(e.value)


def test_batches_from_a_dataset_and_bad_dataset(tmp_path):
    from tether.robot.dataset import Dataset, DatasetWriter
    from tether.robot.spec import Feature, RobotSpec

    spec = RobotSpec("test", 20.0, {"observation.state": Feature("float32", (S,))},
                     Feature("float32", (A,), low=(-1.0,) * A, high=(1.0,) * A), tasks=("play",))

    def write(root, lengths):
        w = DatasetWriter(root, spec, fps=20)
        rng = np.random.default_rng(0)
        for n in lengths:  # the state counts the frame index, so a next frame is one step on
            state = np.arange(n, dtype=np.float32)[:, None] + rng.normal(0, 0.01, (n, S)).astype(np.float32)
            w.add_episode({"observation.state": state, "action": rng.uniform(-1, 1, (n, A)).astype(np.float32)},
                          "play")
        return Dataset(root)

    ds = write(tmp_path / "ok", (30, 40))
    data = GoalData.from_dataset(ds)
    assert len(data.starts) == 30 + 40 - 2
    cfg = GciqlConfig()
    batch = data.batches(cfg, Normalizer.fit(data.obs, data.actions), 64)(0)
    assert batch["obs"].shape == (64, 1, S) and batch["value_goal"].shape == (64, S)
    assert set(np.unique(batch["reward"].numpy())) <= {-1.0, 0.0}
    assert torch.equal(batch["mask"], -batch["reward"])  # success: reward 0, no bootstrap
    # the next state is the next frame of the same episode (the state counts the frame index)
    step = (batch["next_obs"] - batch["obs"])[:, 0, 0] * data.obs[:, 0].std()
    assert torch.allclose(step, torch.ones(64), atol=0.05)
    with pytest.raises(ValueError, match="no episode of 2 frames") as e:
        GoalData.from_dataset(write(tmp_path / "short", (1, 1)))
    assert "\n" not in str(e.value)
