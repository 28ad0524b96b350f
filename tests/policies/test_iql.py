"""IQL: the expectile loss on hand-made values, Polyak targets, transitions and terminals, the best
action recovered from mixed-quality data where BC is not, and ONNX export (state and image)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tether.policies.configs import IcvfConfig, IqlConfig, TrainConfig
from tether.policies.data import Normalizer
from tether.policies.export import export_policy, parity
from tether.policies.icvf import Icvf
from tether.policies.iql import Iql, expectile_loss
from tether.policies.offline import RewardColumnError, Transitions, load_offline_policy, train_offline
from tether.robot.dataset import Dataset, DatasetWriter
from tether.robot.drivers.pointmass import TASK, pointmass_spec
from tether.robot.runner import PolicyRunner
from tether.robot.spec import Feature, RobotSpec


pytestmark = pytest.mark.usefixtures("one_thread")


def best_action(pos: np.ndarray) -> np.ndarray:
    return np.clip(-3 * pos, -1, 1)


def mixed_dataset(root, episodes=20, length=20, p_expert=0.5, seed=0, rate_hz=10.0):
    """Point-mass episodes, each step the best action with probability ``p_expert``, else a
    uniform random one; reward -|a - a*(s)|: BC learns the average, IQL should find a*."""
    writer = DatasetWriter(root, pointmass_spec(rate_hz), fps=rate_hz)
    rng = np.random.default_rng(seed)
    for _ in range(episodes):
        pos, vel, states, actions, rewards = rng.uniform(-1, 1, 2), np.zeros(2), [], [], []
        for _ in range(length):
            states.append(np.concatenate([pos, vel]))
            a = best_action(pos) if rng.random() < p_expert else rng.uniform(-1, 1, 2)
            rewards.append(-np.linalg.norm(a - best_action(pos)))
            pos, vel = pos + 0.1 * a, a
            actions.append(a)
        writer.add_episode({"observation.state": np.array(states, np.float32),
                            "action": np.array(actions, np.float32),
                            "next.reward": np.array(rewards, np.float32)}, TASK)
    return root


def test_expectile_loss_on_hand_made_values():
    diff = torch.tensor([2.0, -1.0, 0.0, -3.0])
    # |tau - 1(u < 0)| u^2 with tau = 0.7: 0.7*4, 0.3*1, 0, 0.3*9
    assert expectile_loss(diff, 0.7).item() == pytest.approx((2.8 + 0.3 + 0 + 2.7) / 4)
    assert expectile_loss(diff, 0.5).item() == pytest.approx(0.5 * (4 + 1 + 9) / 4)
    # the minimizer over a constant v is the tau-expectile: above the mean for tau > 0.5
    q = torch.tensor([0.0, 0.0, 0.0, 10.0])
    v = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([v], lr=0.1)
    for _ in range(500):
        opt.zero_grad()
        expectile_loss(q - v, 0.7).backward()
        opt.step()
    # expectile e solves 0.7 * (10 - e) = 0.3 * 3 * e  ->  e = 7 / 1.6
    assert v.item() == pytest.approx(7 / 1.6, abs=1e-3)


@pytest.mark.parametrize("setting, match", [
    ({"expectile": 1.0}, "expectile must be in"), ({"expectile": 0.0}, "expectile must be in"),
    ({"tau": 0.0}, "0 < tau <= 1"), ({"discount": 1.0}, "0 <= discount < 1"),
])
def test_out_of_range_td_settings_are_refused_by_iql_and_icvf(setting, match):
    with pytest.raises(ValueError, match=match):
        Iql(IqlConfig(hidden=(8,), **setting), 3, 2, 1)
    with pytest.raises(ValueError, match=match):
        Icvf(IcvfConfig(**setting))


def test_target_critics_follow_by_polyak_averaging():
    model = Iql(IqlConfig(hidden=(8,), tau=0.1), 3, 2, 1)
    before = model.target["q1"][0].weight.clone()
    with torch.no_grad():
        model.q1[0].weight.add_(1.0)
    model.after_step()
    torch.testing.assert_close(model.target["q1"][0].weight, before + 0.1)
    assert not any(p.requires_grad for p in model.target.parameters())
    loss = model.loss(obs=torch.randn(4, 1, 3), actions=torch.rand(4, 2), reward=torch.ones(4),
                      next_obs=torch.randn(4, 1, 3), done=torch.zeros(4), goal=torch.ones(4, 1))
    loss.backward()
    assert all(p.grad is None for p in model.target.parameters())
    assert set(model.metrics) >= {"value_loss", "critic_loss", "actor_loss", "advantage", "weight"}


def test_transitions_terminals_and_reward_columns(tmp_path):
    spec = pointmass_spec(10.0)
    writer = DatasetWriter(tmp_path / "ds", spec, fps=10)
    for n, success in ((4, True), (5, False)):  # a success ends episode 0; episode 1 times out
        writer.add_episode({"observation.state": np.arange(4 * n, dtype=np.float32).reshape(n, 4),
                            "action": np.zeros((n, 2), np.float32),
                            "next.reward": np.arange(n, dtype=np.float32),
                            "next.success": np.arange(n) == n - 1 if success else np.zeros(n, bool)}, TASK)
    ds = Dataset(tmp_path / "ds")
    t = Transitions.from_dataset(ds, IqlConfig(terminal="success", reward_normalization="none", reward_shift=0))
    assert t.starts.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]  # 8 (a truncated last frame) starts none
    assert t.done[t.starts].tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    assert t.next_row[[2, 7]].tolist() == [3, 8]  # the truncated frame is still a next state
    assert t.reward.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4]
    t = Transitions.from_dataset(ds, IqlConfig(terminal="none", reward_normalization="standardize"))
    assert t.starts.tolist() == [0, 1, 2, 4, 5, 6, 7] and t.done.sum() == 0
    r = t.reward[t.starts]
    assert r.mean() == pytest.approx(-1.0, abs=1e-6) and r.std() == pytest.approx(1.0, abs=1e-5)
    r = Transitions.from_dataset(ds, IqlConfig(terminal="none")).reward[t.starts]  # below_max, the default
    assert r.max() == pytest.approx(-1.0, abs=1e-6) and r.std() == pytest.approx(1.0, abs=1e-5)
    assert (Transitions.from_dataset(ds, IqlConfig(reward="constant")).reward == 0).all()
    with pytest.raises(RewardColumnError, match=r"no reward column 'reward.vlm'; it has \['next.reward'\]"):
        Transitions.from_dataset(ds, IqlConfig(reward="reward.vlm"))


def test_iql_recovers_the_best_action_where_bc_averages(tmp_path):
    root = mixed_dataset(tmp_path / "ds")
    optim = TrainConfig(steps=300, lr=1e-3, batch_size=128, warmup_steps=20, ema_decay=0.9, checkpoint_every=1000)
    cfg = IqlConfig(hidden=(64, 64), discount=0.9, reward_shift=0.0, terminal="none")
    rng = np.random.default_rng(5)
    states = np.concatenate([rng.uniform(-1, 1, (200, 2)), rng.uniform(-1, 1, (200, 2))], 1).astype(np.float32)
    errors = {}
    for algo in ("iql", "bc"):
        run = train_offline(root, algo, cfg, optim, tmp_path / algo)
        session = ort.InferenceSession(str(run.onnx))
        (actions,) = session.run(["action"], {"obs": states[:, None], "goal": np.ones((200, 1), np.float32)})
        errors[algo] = np.abs(actions - best_action(states[:, :2])).mean()
        assert run.parity <= 1e-5
    assert errors["iql"] < 0.2 and errors["bc"] > 0.3, errors
    report = json.loads((tmp_path / "iql" / "report.json").read_text())
    assert report["reward"]["column"] == "next.reward" and report["transitions"] == 20 * 19
    # the checkpoint rebuilds the same actor
    learner, normalizer, tasks, spec = load_offline_policy(tmp_path / "iql" / "policy.pt")
    assert tasks == [TASK] and spec == Dataset(root).spec
    assert parity(learner.actor, normalizer, spec, tmp_path / "iql" / "policy.onnx", 1) <= 1e-5


def test_exported_state_actor_runs_in_the_policy_runner(tmp_path):
    torch.manual_seed(0)
    spec = pointmass_spec(10.0)
    model = Iql(IqlConfig(hidden=(16, 16)), 4, 2, 1)
    normalizer = Normalizer(np.ones(4, np.float32), np.full(4, 2.0, np.float32),
                            np.zeros(2, np.float32), np.full(2, 3.0, np.float32))  # actions beyond limits
    path = export_policy(model.actor, normalizer, spec, [TASK], tmp_path / "policy.onnx")
    assert parity(model.actor, normalizer, spec, path, 1, n=64) <= 1e-5
    meta = json.loads({p.key: p.value for p in onnx.load(path).metadata_props}["tether.policy"])
    assert meta["kind"] == "iql" and meta["window"] == 1
    runner = PolicyRunner(path)
    runner.reset(TASK)
    action = runner.act({"observation.state": np.array([0.3, -0.2, 0.0, 0.1], np.float32)})
    with torch.no_grad():
        obs = (torch.tensor([[[0.3, -0.2, 0.0, 0.1]]]) - 1) / 2
        want = (model.actor(obs, torch.ones(1, 1)) * 3).clamp(-1, 1)[0].numpy()
    np.testing.assert_allclose(action, want, atol=1e-6)


def test_exported_image_actor_takes_the_frame_by_its_feature_key(tmp_path):
    torch.manual_seed(0)
    spec = RobotSpec("toy", 10.0, {"observation.state": Feature("float32", (3,)),
                                   "observation.images.front": Feature("uint8", (32, 32, 3), unit="pixel")},
                     Feature("float32", (2,), low=(-1, -1), high=(1, 1)))
    model = Iql(IqlConfig(hidden=(16,), encoder="image", channels=(8, 8)), 3, 2, 2,
                camera="observation.images.front", image_shape=(32, 32, 3))
    normalizer = Normalizer(np.zeros(3, np.float32), np.ones(3, np.float32), np.zeros(2, np.float32),
                            np.ones(2, np.float32))
    path = export_policy(model.actor, normalizer, spec, ["a", "b"], tmp_path / "policy.onnx")
    assert parity(model.actor, normalizer, spec, path, 2, n=16) <= 1e-5
    proto = onnx.load(path)
    assert [i.name for i in proto.graph.input] == ["obs", "goal", "observation.images.front"]
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["tether.policy"])["images"] == ["observation.images.front"]
    assert "observation.images.front" in json.loads(props["tether.spec"])["observation"]
