"""SAC: the random-pair ensemble minimum, the tanh-Gaussian log-density, disjoint gradients of the
critic and actor losses, Polyak targets, a bandit learned, and export of the mean and the
exploration (noise-input) policies read by the ONNX runner."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from tether.policies.configs import SacConfig
from tether.policies.data import Normalizer
from tether.policies.export import export_policy, parity
from tether.policies.sac import ExplorationPolicy, Sac
from tether.robot.drivers.pointmass import TASK, pointmass_spec
from tether.robot.runner import PolicyRunner


pytestmark = pytest.mark.usefixtures("one_thread")


def batch(b=32, s=4, a=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.randn(b, 1, s, generator=g), "actions": torch.rand(b, a, generator=g) * 2 - 1,
            "reward": torch.randn(b, generator=g), "next_obs": torch.randn(b, 1, s, generator=g),
            "done": torch.zeros(b), "goal": torch.ones(b, 1)}


def test_ensemble_min_is_over_a_random_pair():
    model = Sac(SacConfig(hidden=(8,), critics=5, subset=2), 4, 2, 1)
    q = torch.arange(5.0)[:, None].expand(5, 3)  # member i says i for every state
    g = torch.Generator().manual_seed(0)
    seen = [int(model.subset_min(q, g)[0]) for _ in range(2000)]
    # min of two distinct members: value k has probability (4 - k) / C(5, 2); 4 never wins
    freq = np.bincount(seen, minlength=5) / len(seen)
    np.testing.assert_allclose(freq, [0.4, 0.3, 0.2, 0.1, 0.0], atol=0.03)
    # and the TD target uses such a pair: its value lies between the global min and max
    critics = Sac(SacConfig(hidden=(8,), critics=10, subset=10), 4, 2, 1)
    assert torch.equal(critics.subset_min(q), q.min(0).values)  # subset = E: min over all


def test_subset_bounds_are_checked():
    with pytest.raises(ValueError, match="subset <= critics"):
        Sac(SacConfig(critics=2, subset=3), 4, 2, 1)


def test_tanh_gaussian_log_density_is_the_change_of_variables():
    model = Sac(SacConfig(hidden=(8,)), 4, 2, 1)
    obs, goal = torch.randn(64, 1, 4), torch.ones(64, 1)
    torch.manual_seed(1)
    action, logp = model.actor.sample(obs, goal)
    mu, log_std = model.actor.distribution(obs, goal)
    ref = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mu, log_std.exp()), [torch.distributions.TanhTransform(cache_size=1)])
    torch.testing.assert_close(logp, ref.log_prob(action.clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1), atol=2e-3, rtol=1e-3)
    many, many_logp = model.actor.sample(obs, goal, n=3)
    assert many.shape == (3, 64, 2) and many_logp.shape == (3, 64) and many.abs().max() < 1


def test_actor_loss_leaves_critics_alone_and_targets_follow_by_polyak():
    model = Sac(SacConfig(hidden=(8,), critics=3, tau=0.1), 4, 2, 1)
    b = batch()
    loss, _ = model.actor_losses(b["obs"], b["goal"], model.features(b["obs"], b["goal"]))
    loss.backward()
    assert all(p.grad is None for p in model.critics.parameters())
    assert all(p.grad is not None for p in model.actor.parameters()) and model.log_alpha.grad is not None
    before = [p.clone() for p in model.target.parameters()]
    with torch.no_grad():
        for p in model.critics.parameters():
            p.add_(1.0)
    model.after_step()
    for old, new in zip(before, model.target.parameters()):
        torch.testing.assert_close(new, old + 0.1)
    assert not any(p.requires_grad for p in model.target.parameters())


def test_actor_every_updates_the_actor_on_some_calls_only():
    model = Sac(SacConfig(hidden=(8,), critics=2, actor_every=3), 4, 2, 1)
    has_actor = []
    for _ in range(6):
        model.loss(**batch())
        has_actor.append("actor_loss" in model.metrics)
    assert has_actor == [False, False, True, False, False, True]


def test_sac_learns_a_one_step_bandit():
    """Reward -(a - 0.4)^2 then terminal: the mean action should go to 0.4."""
    torch.manual_seed(0)
    model = Sac(SacConfig(hidden=(32, 32), critics=4, init_temperature=0.05), 2, 1, 1)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    obs = torch.zeros(128, 1, 2)
    for _ in range(400):
        a = torch.rand(128, 1) * 2 - 1
        b = {"obs": obs, "actions": a, "reward": -((a[:, 0] - 0.4) ** 2), "next_obs": obs,
             "done": torch.ones(128), "goal": torch.ones(128, 1)}
        loss = model.loss(**b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.after_step()
    assert model.actor(obs[:1], torch.ones(1, 1)).item() == pytest.approx(0.4, abs=0.1)


def test_mean_and_exploration_policies_export_to_the_runner(tmp_path):
    spec = pointmass_spec(10.0)
    model = Sac(SacConfig(hidden=(16,), critics=2), 4, 2, 1).eval()
    normalizer = Normalizer(np.zeros(4), np.ones(4), np.zeros(2), np.ones(2))
    mean_path = export_policy(model.actor, normalizer, spec, [TASK], tmp_path / "mean.onnx")
    noisy = ExplorationPolicy(model.actor)
    noisy_path = export_policy(noisy, normalizer, spec, [TASK], tmp_path / "explore.onnx")
    assert parity(noisy, normalizer, spec, noisy_path, 1) < 1e-5
    mean_runner, noisy_runner = PolicyRunner(mean_path), PolicyRunner(noisy_path, seed=3)
    assert mean_runner.meta["kind"] == noisy_runner.meta["kind"] == "sac"
    assert mean_runner.noise_shape is None and noisy_runner.noise_shape == (1, 1, 2)
    assert noisy_runner.meta["stochastic"] is True
    for r in (mean_runner, noisy_runner):
        r.reset(TASK)
    obs = {"observation.state": np.array([0.3, -0.2, 0.0, 0.0], np.float32)}
    mean = mean_runner.act(obs)
    with torch.no_grad():
        expected = model.actor(torch.from_numpy(obs["observation.state"])[None, None], torch.ones(1, 1))[0].numpy()
    np.testing.assert_allclose(mean, expected, atol=1e-5)
    draws = np.stack([noisy_runner.act(obs) for _ in range(200)])
    assert draws.std(0).min() > 0.05 and np.abs(draws).max() <= 1  # explores, within the limits
    assert not any(np.allclose(a, b) for a, b in itertools.pairwise(draws[:5]))
    np.testing.assert_allclose(noisy_runner.act(obs, deterministic=True), mean, atol=1e-5)  # zero noise: the mean
