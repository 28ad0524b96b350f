"""Cal-QL: Monte-Carlo returns per episode (terminals, truncations), the pushed-down Q clipped from
below by them, the logged share of Q under the bound on hand-made critics, and ``tether train
--algo calql`` writing a checkpoint and an ONNX policy the runner loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tether.launch.cli import main
from tether.policies.calql import CalQl, mc_returns, pushed_down
from tether.policies.configs import CalQlConfig, SacConfig
from tether.policies.offline import load_offline_policy
from tether.robot.drivers.pointmass import TASK
from tether.robot.runner import PolicyRunner

G = 0.9


pytestmark = pytest.mark.usefixtures("one_thread")


def test_mc_returns_per_episode_with_terminals_and_truncations():
    # episode A: rows 0-2, terminal at its last frame; episode B: rows 3-4, truncated
    reward = np.array([1.0, 2.0, 3.0, -1.0, -2.0])
    done = np.array([0, 0, 1, 0, 0])
    next_row = np.array([1, 2, 2, 4, 4])
    g = mc_returns(reward, done, next_row, G)
    b_last = -2.0 / (1 - G)  # the cut episode's last reward continued forever
    np.testing.assert_allclose(g, [1 + G * 2 + G**2 * 3, 2 + G * 3, 3, -1 + G * b_last, b_last], rtol=1e-6)
    zero = mc_returns(reward, done, next_row, G, tail="zero")
    np.testing.assert_allclose(zero[3:], [-1 + G * -2, -2], rtol=1e-6)
    # a terminal inside an episode stops the sum there (no bootstrap through it)
    np.testing.assert_allclose(mc_returns([1.0, 5.0], [1, 0], [1, 1], G, "zero"), [1.0, 5.0])


@pytest.mark.parametrize("bad, match", [
    (dict(next_row=np.array([2, 1, 2])), "point to the next row"),
    (dict(discount=1.0), r"\[0, 1\)"),
    (dict(tail="mean"), "'repeat' or 'zero'"),
    (dict(done=np.zeros(2)), "one length"),
])
def test_mc_returns_bad_input(bad, match):
    args = dict(reward=np.zeros(3), done=np.zeros(3), next_row=np.array([1, 2, 2]), discount=G)
    with pytest.raises(ValueError, match=match):
        mc_returns(**{**args, **bad})


def test_pushed_down_q_is_clipped_from_below_by_the_mc_return():
    e, n, b = 2, 3, 4
    q_rand = torch.full((e, n, b), -50.0)
    q_pi = torch.tensor([-5.0, 0.0, 2.0, 9.0]).expand(e, n, b)
    q_next = torch.full((e, n, b), -7.0)
    logp = torch.zeros(n, b)
    bound = torch.tensor([1.0, 1.0, 1.0, 1.0])
    pushed, clipped = pushed_down(q_rand, 1, q_pi, logp, q_next, logp, bound)
    assert torch.equal(clipped[0, 0], torch.tensor([1.0, 1.0, 2.0, 9.0]))  # max(Q, MC)
    plain, unclipped = pushed_down(q_rand, 1, q_pi, logp, q_next, logp, None)
    assert torch.equal(unclipped, q_pi)
    # by hand, state 0: log(3 e^(-50 + log 2) + 3 e^(max(-5, 1)) + 3 e^(max(-7, 1)))
    expected = torch.logsumexp(torch.tensor([-50 + np.log(2)] * 3 + [1.0] * 6), 0)
    assert pushed[0, 0].item() == pytest.approx(expected.item(), rel=1e-6)
    assert plain[0, 0].item() < pushed[0, 0].item()  # CQL alone pushes below the return
    assert pushed[1, 3].item() == pytest.approx(plain[1, 3].item(), abs=1e-3)  # Q above it: same


def test_logged_share_of_q_under_the_bound_on_hand_made_critics():
    model = CalQl(CalQlConfig(sac=SacConfig(hidden=(8,), critics=2), actions=5), 4, 2, 1)
    with torch.no_grad():  # every critic says Q = 0.5 for every state and action
        last = model.critics.net[-1]
        last.weight.zero_()
        last.bias.fill_(0.5)
    b = 8
    batch = {"obs": torch.randn(b, 1, 4), "actions": torch.zeros(b, 2), "reward": torch.zeros(b),
             "next_obs": torch.randn(b, 1, 4), "done": torch.zeros(b), "goal": torch.ones(b, 1),
             "mc_return": torch.tensor([0.0, 1.0, 2.0, -1.0, 0.4, 0.6, 5.0, -3.0])}
    model.loss(**batch)
    assert model.metrics["below_bound"] == pytest.approx(4 / 8)  # states whose return > 0.5
    assert model.metrics["q_pi"] > 0.5  # after clipping
    with pytest.raises(ValueError, match="mc_return"):
        model.loss(**{k: v for k, v in batch.items() if k != "mc_return"})


def test_tether_train_calql_writes_a_runnable_policy(tmp_path, capsys, reach_dataset):
    data = reach_dataset(tmp_path / "data", episodes=8, length=15, rate_hz=10.0)
    out = tmp_path / "run"
    main(["train", str(data), "--algo", "calql", "--reward", "next.reward", "--out", str(out),
          "--iql.terminal", "none", "--calql.sac.hidden", "16", "16", "--calql.actions", "3",
          "--optim.steps", "30", "--optim.batch-size", "32", "--optim.warmup-steps", "5"])
    assert "calql on" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics[-1]["below_bound"] <= 1.0 and "cql_loss" in metrics[-1]
    learner, normalizer, tasks, spec = load_offline_policy(out / "policy.pt")
    assert isinstance(learner, CalQl) and learner.cfg.hidden == (16, 16) and tasks == [TASK]
    assert torch.load(out / "policy.pt", weights_only=False)["reward"]["column"] == "next.reward"
    runner = PolicyRunner(out / "policy.onnx")
    assert runner.meta["kind"] == "calql" and runner.noise_shape is None
    runner.reset(TASK)
    action = runner.act({"observation.state": np.zeros(4, np.float32)})
    assert action.shape == (2,) and np.all(np.abs(action) <= 1)
