"""ONNX export: parity with torch for fixed noise, metadata, and the torch-free runner."""

import json

import numpy as np
import onnx
import pytest
import torch

from tether.policies.beso import Beso
from tether.policies.configs import BesoConfig
from tether.policies.data import Normalizer
from tether.policies.export import BesoGraph, export_policy, parity
from tether.robot.runner import PolicyLoadError, PolicyRunner
from tether.robot.spec import SpecError
from tether.sim.metaworld import metaworld_spec

TASKS = ["reach-v3", "drawer-open-v3"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    spec = metaworld_spec(tuple(TASKS))
    model = Beso(BesoConfig(d_model=32, n_layers=2, n_heads=2, guidance_weight=1.5), 39, 4, 2).eval()
    rng = np.random.default_rng(0)
    normalizer = Normalizer.fit(rng.normal(size=(500, 39)).astype(np.float32),
                                rng.uniform(-0.8, 0.6, (500, 4)).astype(np.float32))
    path = export_policy(model, normalizer, spec, TASKS, tmp_path_factory.mktemp("onnx") / "policy.onnx")
    return model, normalizer, spec, path


def test_parity_with_torch_for_fixed_noise(exported):
    model, normalizer, spec, path = exported
    assert parity(model, normalizer, spec, path, len(TASKS), n=64) <= 1e-4


def test_metadata_carries_spec_sampler_and_normalization(exported):
    model, normalizer, spec, path = exported
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    policy = json.loads(props["tether.policy"])
    assert policy["num_steps"] == 3 and policy["sampler"] == "ddim" and policy["guidance_weight"] == 1.5
    assert policy["goal"]["tasks"] == TASKS
    np.testing.assert_allclose(policy["normalization"]["observation.state"]["mean"], normalizer.obs_mean)
    spec_meta = json.loads(props["tether.spec"])
    assert spec_meta["control_rate_hz"] == 80.0 and list(spec_meta["observation"]) == ["observation.state"]


def test_runner_reproduces_torch_and_respects_limits(exported):
    model, normalizer, spec, path = exported
    runner = PolicyRunner(path, seed=3)
    runner.reset("drawer-open-v3")
    rng = np.random.default_rng(1)
    obs = [rng.normal(size=39).astype(np.float32) for _ in range(3)]
    actions = [runner.act({"observation.state": o}) for o in obs]
    # Same noise stream in torch: the runner draws standard normals of shape [1, T, A] per step.
    noise_rng = np.random.default_rng(3)
    history = [obs[0], obs[0]]
    graph = BesoGraph(model, normalizer, spec).eval()
    for o, got in zip(obs, actions):
        history = (history + [o])[-2:]
        noise = noise_rng.standard_normal((1, 2, 4), dtype=np.float32)
        with torch.no_grad():
            want = graph(torch.from_numpy(np.stack(history)[None]), torch.tensor([[0.0, 1.0]]),
                         torch.from_numpy(noise))[0][0].numpy()
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert got.dtype == np.float32 and np.all(got >= -1) and np.all(got <= 1)


def test_runner_rejects_bad_observations_and_tasks(exported):
    *_, path = exported
    runner = PolicyRunner(path)
    with pytest.raises(ValueError, match="not 'push-v3'"):
        runner.reset("push-v3")
    runner.reset("reach-v3")
    with pytest.raises(SpecError, match="shape"):
        runner.act({"observation.state": np.zeros(38, np.float32)})
    with pytest.raises(SpecError, match="NaN"):
        runner.act({"observation.state": np.full(39, np.nan, np.float32)})


def test_runner_refuses_a_model_without_tether_metadata(exported, tmp_path):
    *_, path = exported
    model = onnx.load(path)
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, bare)
    with pytest.raises(PolicyLoadError, match="not a tether policy"):
        PolicyRunner(bare)


def test_mlp_policy_exports_with_parity(tmp_path):
    from tether.policies.mlp import MlpPolicy

    torch.manual_seed(0)
    spec = metaworld_spec(tuple(TASKS))
    model = MlpPolicy(39, 4, 2).eval()
    rng = np.random.default_rng(0)
    normalizer = Normalizer.fit(rng.normal(size=(100, 39)).astype(np.float32),
                                rng.uniform(-1, 1, (100, 4)).astype(np.float32))
    path = export_policy(model, normalizer, spec, TASKS, tmp_path / "mlp.onnx")
    assert parity(model, normalizer, spec, path, len(TASKS)) <= 1e-5
    runner = PolicyRunner(path)
    assert runner.meta["kind"] == "mlp" and runner.window == 1
    runner.reset("reach-v3")
    assert runner.act({"observation.state": np.zeros(39, np.float32)}).shape == (4,)


def test_export_overrides_the_sampler_of_a_trained_beso(tmp_path):
    from tether.launch.cli import main as cli
    from tether.policies.checkpoint import save_policy
    from tether.robot.drivers.pointmass import pointmass_spec

    model = Beso(BesoConfig(d_model=16, n_layers=1, n_heads=2), 4, 2, 1).eval()
    identity = Normalizer(np.zeros(4, np.float32), np.ones(4, np.float32),
                          np.zeros(2, np.float32), np.ones(2, np.float32))
    ckpt = save_policy(tmp_path / "policy.pt", model, identity, ["reach-origin"], pointmass_spec(50.0))
    cli(["export", str(ckpt), "--num-steps", "2", "--guidance-weight", "0", "--sampler",
         "euler_ancestral", "--out", str(tmp_path / "p.onnx")])
    meta = json.loads({p.key: p.value for p in onnx.load(tmp_path / "p.onnx").metadata_props}["tether.policy"])
    assert (meta["num_steps"], meta["guidance_weight"], meta["sampler"]) == (2, 0.0, "euler_ancestral")
    assert meta["noise_length"] == 3 * 2  # a draw per step plus the first, for the T = 2 window
