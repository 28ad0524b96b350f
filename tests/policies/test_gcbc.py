"""GCBC on BESO's backbone: regression, chunks, export with parity, and the runner's chunk API."""

import numpy as np
import pytest
import torch

from tether.policies.beso import Beso
from tether.policies.configs import BesoConfig
from tether.policies.data import Normalizer
from tether.policies.export import export_policy, parity
from tether.policies.gcbc import Gcbc
from tether.robot.drivers.pointmass import pointmass_spec
from tether.robot.runner import PolicyRunner

CFG = BesoConfig(d_model=32, n_layers=2, n_heads=2, window=2, action_horizon=3, dropout=0.0)
IDENTITY = Normalizer(np.zeros(4, np.float32), np.ones(4, np.float32),
                      np.zeros(2, np.float32), np.ones(2, np.float32))


def test_gcbc_learns_a_goal_conditioned_mapping():
    torch.manual_seed(0)
    model = Gcbc(CFG, 3, 2, 2)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    obs = torch.randn(256, 2, 3)
    goal = torch.eye(2)[torch.randint(0, 2, (256,))]
    sign = goal[:, :1] * 2 - 1  # the goal flips the action
    # action k may depend on the observations up to min(k, T - 1) (causal): the chunk repeats the last
    seen = obs[:, [0, 1, 1, 1], :2]
    actions = sign[:, None] * torch.tanh(seen)
    first = model.loss(obs, actions, goal).item()
    for _ in range(300):
        loss = model.loss(obs, actions, goal)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.loss(obs, actions, goal).item() < 0.1 * first


@pytest.mark.parametrize("kind", ["gcbc", "beso-euler-ancestral"])
def test_chunk_policies_export_with_parity_and_run_in_the_runner(kind, tmp_path):
    torch.manual_seed(0)
    spec = pointmass_spec(50.0)
    if kind == "gcbc":
        model = Gcbc(CFG, 4, 2, 1).eval()
    else:
        model = Beso(BesoConfig(**{**CFG.__dict__, "sampler": "euler_ancestral"}), 4, 2, 1).eval()
    path = export_policy(model, IDENTITY, spec, ["reach-origin"], tmp_path / "policy.onnx")
    assert parity(model, IDENTITY, spec, path, tasks=1) < 1e-4
    runner = PolicyRunner(path, seed=0)
    assert runner.action_horizon == 3
    runner.reset("reach-origin")
    obs = {"observation.state": np.zeros(4, np.float32)}
    chunk = runner.act_chunk(obs)
    assert chunk.shape == (3, 2) and np.all(np.abs(chunk) <= 1)
    assert runner.act(obs).shape == (2,)
