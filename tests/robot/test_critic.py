"""Value-guided sampling (``tether.robot.critic``): a BESO policy's candidates, drawn in one
batched onnxruntime call, ranked by an exported GCIQL critic; the runner acts with the candidate
of highest Q. A critic that cannot guide the policy, or candidates with nothing to rank them, are
refused in one line; ``tether export --critic`` writes the critic of a GCIQL checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tether.policies.beso import Beso  # noqa: E402
from tether.policies.configs import BesoConfig, GciqlConfig  # noqa: E402
from tether.policies.data import Normalizer  # noqa: E402
from tether.policies.export import export_policy  # noqa: E402
from tether.policies.gciql import Gciql, export_gciql, export_gciql_critic, save_gciql  # noqa: E402
from tether.robot.critic import CriticRunner  # noqa: E402
from tether.robot.runner import PolicyLoadError, PolicyRunner  # noqa: E402
from tether.robot.spec import Feature, RobotSpec  # noqa: E402

S, A, N = 6, 3, 8
GOAL_DIMS = tuple(range(S))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """policy (BESO on observation goals), critic, actor (GCIQL's deterministic actor), gciql_pt
    (its checkpoint), normalizer, spec."""
    root = tmp_path_factory.mktemp("critic")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    normalizer = Normalizer.fit(rng.normal(3, 2, (200, S)).astype(np.float32),
                                rng.uniform(-1, 1, (200, A)).astype(np.float32))
    spec = RobotSpec("test", 20.0, {"observation.state": Feature("float32", (S,))},
                     Feature("float32", (A,), low=(-1.0,) * A, high=(1.0,) * A), tasks=("play",))
    cfg = BesoConfig(window=2, d_model=32, n_layers=1, n_heads=2)
    learner = Gciql(GciqlConfig(hidden=(32, 32)), S, A).eval()
    out = {"normalizer": normalizer, "spec": spec, "learner": learner,
           "policy": export_policy(Beso(cfg, S, A, S).eval(), normalizer, spec, ["play"], root / "beso.onnx",
                                   goal_dims=GOAL_DIMS),
           "actor": export_gciql(learner.actor, normalizer, spec, ["play"], root / "actor.onnx")[0],
           "gciql_pt": save_gciql(root / "gciql.pt", learner, normalizer, ["play"], spec)}
    out["critic"], out["critic_parity"] = export_gciql_critic(learner, normalizer, spec, ["play"], root / "critic.onnx")
    return out


def _observation(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"observation.state": rng.normal(3, 2, S).astype(np.float32),
            "observation.goal": rng.normal(3, 2, S).astype(np.float32)}


def test_the_critic_is_min_q_of_the_learner_on_normalized_inputs(files):
    assert files["critic_parity"] <= 1e-4
    n = files["normalizer"]
    obs = _observation()
    action = np.array([0.3, -0.5, 0.9], np.float32)
    q = CriticRunner(files["critic"]).q(obs["observation.state"][None], obs["observation.goal"][None], action[None])
    with torch.no_grad():
        o = torch.from_numpy(n.obs(obs["observation.state"])[None, None].astype(np.float32))
        g = torch.from_numpy(n.obs(obs["observation.goal"])[None].astype(np.float32))
        a = torch.from_numpy(((action - n.action_center) / n.action_half_range)[None].astype(np.float32))
        ref = torch.minimum(*files["learner"].q(o, g, a)).numpy()
    assert q.shape == (1,) and np.abs(q - ref).max() <= 1e-4


def test_the_runner_acts_with_the_candidate_of_highest_q(files):
    obs = _observation()
    runner = PolicyRunner(files["policy"], seed=8, critic=files["critic"], candidates=N)
    runner.reset("play")
    action = runner.act(obs)
    # The same N candidates by hand: the runner's first draw of its seeded noise, the window padded
    # with the first state, every candidate through the policy and the critic.
    plain = PolicyRunner(files["policy"])
    noise = np.random.default_rng(8).standard_normal((N, *plain.noise_shape[1:]), dtype=np.float32)
    feed = {"obs": np.repeat(np.stack([obs["observation.state"]] * 2)[None], N, 0),
            "goal": np.repeat(obs["observation.goal"][None], N, 0), "noise": noise}
    candidates = plain.session.run(["action"], feed)[0]
    q = CriticRunner(files["critic"]).q(feed["obs"][:, -1], feed["goal"], candidates)
    assert np.ptp(candidates, axis=0).min() > 1e-3  # N different actions to choose among
    best = int(np.argmax(q))
    assert best != 0  # so a runner that took the first candidate would fail here
    np.testing.assert_allclose(runner.last_q, q, atol=1e-5)
    np.testing.assert_allclose(action, candidates[best], atol=1e-5)
    chunk = runner.act_chunk(obs)
    assert chunk.shape == (1, A) and runner.last_q.shape == (N,)


def test_a_critic_that_cannot_guide_the_policy_is_refused_in_one_line(files):
    critic = CriticRunner(files["critic"])
    with pytest.raises(PolicyLoadError, match="conditioned on observation.goal, the policy on a task one hot goal"):
        critic.check_policy(files["spec"], {"kind": "task_one_hot", "tasks": ["play"]})
    wider = RobotSpec("test", 20.0, {"observation.state": Feature("float32", (S + 1,))}, files["spec"].action)
    with pytest.raises(PolicyLoadError, match=r"reads a state of shape \[6\], the policy \[7\]"):
        critic.check_policy(wider, {"kind": "observation", "key": "observation.goal", "tasks": ["play"]})
    with pytest.raises(PolicyLoadError, match="a gciql policy draws no noise"):
        PolicyRunner(files["actor"], critic=files["critic"], candidates=N)
    with pytest.raises(PolicyLoadError, match="is not a tether critic"):
        PolicyRunner(files["policy"], critic=files["policy"], candidates=N)
    with pytest.raises(PolicyLoadError, match="critic file .* does not exist"):
        PolicyRunner(files["policy"], critic=files["policy"].with_name("nope.onnx"), candidates=N)
    with pytest.raises(ValueError, match="4 candidates need a critic to rank them"):
        PolicyRunner(files["policy"], candidates=4)
    with pytest.raises(ValueError, match="0 candidates: at least 1"):
        PolicyRunner(files["policy"], critic=files["critic"], candidates=0)
    with pytest.raises(ValueError, match="deterministic sampling gives one candidate"):
        PolicyRunner(files["policy"], critic=files["critic"], candidates=N, deterministic=True)


def test_export_writes_the_critic_of_a_gciql_checkpoint(files, tmp_path, capsys, cli_error):
    from tether.launch.cli import main

    main(["export", str(files["gciql_pt"]), "--critic", "--out", str(tmp_path / "critic.onnx")])
    assert "critic.onnx" in capsys.readouterr().out
    obs = _observation(2)
    args = obs["observation.state"][None], obs["observation.goal"][None], np.zeros((1, A), np.float32)
    np.testing.assert_allclose(CriticRunner(tmp_path / "critic.onnx").q(*args), CriticRunner(files["critic"]).q(*args),
                               atol=1e-6)
    err = cli_error("export", files["gciql_pt"], "--num-steps", "5")
    assert "--num-steps is a BESO sampling setting" in err
    err = cli_error("eval", files["policy"], "--sim", "pointmass", "--candidates", "4")
    assert "--candidates: 4 candidates need a critic to rank them" in err
