"""The shared training loop: EMA, checkpoints, resume, learning curve."""

import pytest
import torch
from torch import nn

from tether.policies.configs import TrainConfig
from tether.policies.train import _lr_factor, batch_rng, resolve_device, train


class Regression(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def loss(self, x, y):
        return ((self.linear(x) - y) ** 2).mean()


def batches():
    gen = torch.Generator().manual_seed(0)
    w = torch.tensor([[1.0], [-2.0], [0.5]])

    def sample(step):
        x = torch.randn(64, 3, generator=gen)
        return {"x": x, "y": x @ w}

    return sample


def test_trains_writes_curve_and_checkpoint(tmp_path):
    cfg = TrainConfig(steps=300, lr=3e-2, warmup_steps=10, checkpoint_every=100, ema_decay=0.9)
    snapshots = []
    result = train(Regression(), batches(), cfg, tmp_path,
                   on_checkpoint=lambda step, ema: snapshots.append((step, ema.linear.weight.clone())))
    assert [step for step, _ in snapshots] == [100, 200, 300]
    assert torch.equal(snapshots[-1][1], result.ema.linear.weight)  # the EMA model it returns
    assert not torch.equal(snapshots[0][1], snapshots[1][1])
    assert result.losses[-1] < 0.01 * result.losses[0]
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert (tmp_path / "checkpoints/last.pt").exists()
    torch.testing.assert_close(result.ema.linear.weight, torch.tensor([[1.0, -2.0, 0.5]]), atol=0.05, rtol=0)


def test_learning_rate_warms_up_then_decays_to_zero_or_stays_constant():
    cosine = TrainConfig(steps=110, warmup_steps=10)
    constant = TrainConfig(steps=110, warmup_steps=10, lr_schedule="constant")
    for cfg in (cosine, constant):
        assert [_lr_factor(s, cfg) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert [_lr_factor(s, cosine) for s in (10, 60, 110)] == pytest.approx([1.0, 0.5, 0.0])
    assert [_lr_factor(s, constant) for s in (10, 60, 110)] == [1.0, 1.0, 1.0]


def test_resume_continues_from_the_checkpoint(tmp_path):
    short = TrainConfig(steps=100, lr=1e-2, warmup_steps=10, checkpoint_every=50)
    train(Regression(), batches(), short, tmp_path)
    steps_seen = []
    long = TrainConfig(steps=150, lr=1e-2, warmup_steps=10, checkpoint_every=50)
    result = train(Regression(), batches(), long, tmp_path, on_step=lambda s, l: steps_seen.append(s), resume=True)
    assert steps_seen == list(range(100, 150))  # only the remaining steps ran
    assert result.steps[0] == 0 and result.steps[-1] == 149  # history kept across the resume


class NoisyRegression(Regression):
    """Draws from torch's global RNG in its loss, as BESO's noise levels and dropout do."""

    def loss(self, x, y):
        return ((self.linear(x + 0.1 * torch.randn_like(x)) - y) ** 2).mean()


def keyed_batches():
    w = torch.tensor([[1.0], [-2.0], [0.5]])

    def sample(step):
        x = torch.from_numpy(batch_rng(0, step).standard_normal((64, 3)).astype("float32"))
        return {"x": x, "y": x @ w}

    return sample


def test_a_resumed_run_matches_one_never_stopped(tmp_path):
    cfg = TrainConfig(steps=60, lr=1e-2, warmup_steps=5, checkpoint_every=20)
    torch.manual_seed(7)
    whole = train(NoisyRegression(), keyed_batches(), cfg, tmp_path / "whole")

    class Killed(Exception):
        pass

    def kill_at_45(step, loss):  # the last checkpoint holds step 40
        if step == 45:
            raise Killed

    torch.manual_seed(7)
    with pytest.raises(Killed):
        train(NoisyRegression(), keyed_batches(), cfg, tmp_path / "cut", on_step=kill_at_45)
    torch.manual_seed(123)  # whatever the process did in between
    resumed = train(NoisyRegression(), keyed_batches(), cfg, tmp_path / "cut", resume=True)
    assert resumed.steps == whole.steps and resumed.losses == whole.losses
    for name, value in whole.ema.state_dict().items():
        assert torch.equal(value, resumed.ema.state_dict()[name]), name


def test_non_finite_loss_stops_training(tmp_path):
    class Broken(Regression):
        def loss(self, x, y):
            return super().loss(x, y) * float("nan")

    with pytest.raises(FloatingPointError, match="loss is nan at step 0"):
        train(Broken(), batches(), TrainConfig(steps=5), tmp_path)


def test_two_processes_train_data_parallel_under_torchrun(tmp_path):
    """`torchrun --nproc-per-node 2 ... tether train`: gloo on CPU, one checkpoint from rank 0."""
    import json
    import os
    import subprocess
    import sys

    import numpy as np

    from tether.robot.dataset import DatasetWriter
    from tether.robot.drivers.pointmass import pointmass_spec

    writer = DatasetWriter(tmp_path / "ds", pointmass_spec(10.0), fps=10)
    rng = np.random.default_rng(0)
    for _ in range(3):
        obs = rng.normal(size=(20, 4)).astype(np.float32)
        writer.add_episode({"observation.state": obs, "action": np.tanh(obs[:, :2])}, "t")
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "tether.launch.cli", "train", str(tmp_path / "ds"), "--out", str(out), "--algo", "gcbc",
         "--beso.d-model", "16", "--beso.n-layers", "1", "--beso.n-heads", "2", "--optim.steps", "20",
         "--optim.batch-size", "8", "--optim.warmup-steps", "2"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((out / "train_history.json").read_text())
    assert history["world_size"] == 2 and history["steps"][-1] == 19
    assert (out / "policy.pt").exists() and "on 2 process(es), cpu" in proc.stdout


@pytest.mark.parametrize("name, message", [
    ("tpu", "unknown device 'tpu'; use auto, cpu, cuda or cuda:N"),
    ("meta", "unsupported device 'meta'"),
    ("cuda:99", "'cuda:99' asked for, but torch"),
])
def test_resolve_device_refuses_what_it_cannot_train_on(name, message):
    with pytest.raises(ValueError, match=message):
        resolve_device(name)


def test_resolve_device_picks_the_gpu_only_when_there_is_one(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="'cuda' asked for, but torch .* sees no CUDA GPU; use cpu, or auto"):
        resolve_device("cuda")


def test_tether_train_checks_the_device_before_reading_data(tmp_path, cli_error):
    err = cli_error("train", tmp_path / "no-such-dataset", "--optim.device", "tpu")
    assert err == "tether: error: --optim.device: unknown device 'tpu'; use auto, cpu, cuda or cuda:N"
    err = cli_error("pretrain-value", "--dataset", tmp_path / "no-such-dataset", "--optim.device", "meta")
    assert "--optim.device: unsupported device 'meta'" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_on_the_gpu_and_resumes_on_the_cpu(tmp_path):
    """On CUDA: batches move to the GPU, the checkpoint holds the GPU's RNG, and the models come
    back on the CPU; the GPU checkpoint resumes on a machine without one."""
    cfg = TrainConfig(steps=100, lr=3e-2, warmup_steps=10, checkpoint_every=50, device="cuda")
    model = NoisyRegression()
    result = train(model, keyed_batches(), cfg, tmp_path)
    assert result.ema.linear.weight.device.type == "cpu" and model.linear.weight.device.type == "cpu"
    state = torch.load(tmp_path / "checkpoints/last.pt", weights_only=False, map_location="cpu")
    assert "cuda_rng" in state and state["config"]["device"] == "cuda"
    more = TrainConfig(steps=150, lr=3e-2, warmup_steps=10, checkpoint_every=50, device="cpu")
    resumed = train(NoisyRegression(), keyed_batches(), more, tmp_path, resume=True)
    assert resumed.steps[-1] == 149 and resumed.losses[-1] < 0.05 * resumed.losses[0]
