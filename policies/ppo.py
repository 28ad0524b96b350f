"""PPO in simulation with rsl_rl, and the export of its actor to tether's ONNX format.

PPO (Schulman et al., "Proximal policy optimization algorithms", 2017) comes from rsl_rl
(rsl-rl-lib 5.5, ETH Zurich / NVIDIA; Rudin et al., CoRL 2021): its ``OnPolicyRunner`` with
``PPO`` (clipped surrogate, GAE, adaptive learning rate on a KL target) and ``MLPModel`` actor and
critic with empirical observation normalization. Nothing of PPO is re-implemented here: this
module holds the configuration (legged_gym's defaults, scaled to a small arm) and the export.

Export: the rsl_rl actor's deterministic output is the Gaussian's mean, in the env's normalized
action units ([-1, 1], which the env clips and scales to the robot's limits). tether's
``MlpGraph`` (``tether.policies.export``) computes ``clip(center + half * net((obs - mean) /
std))``: with ``mean``/``std`` the actor's running statistics (rsl_rl divides by ``std + eps``,
so ``std`` here is that sum) and ``center``/``half`` the action's limits, the ONNX graph is the
actor plus its observation normalization, in robot units. Metadata kind ``"ppo"``, window 1.

torch is imported inside the functions, so that the command line can read ``PpoConfig`` quickly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from tether.policies.data import Normalizer

OBS_GROUP = "policy"


@dataclass
class PpoConfig:
    """PPO hyper-parameters (rsl_rl names; defaults from legged_gym's ``LeggedRobotCfgPPO``
    except the network size and entropy, chosen for a 17-D state and 3-D action)."""

    num_steps_per_env: int = 24
    """Rollout length per env and iteration (steps of 20 ms)."""
    hidden_dims: tuple[int, ...] = (128, 128)
    """Hidden layers of the actor and of the critic."""
    activation: str = "elu"
    init_noise_std: float = 1.0
    """Initial std of the Gaussian policy (normalized action units)."""
    learning_rate: float = 1e-3
    num_learning_epochs: int = 5
    num_mini_batches: int = 4
    clip_param: float = 0.2
    gamma: float = 0.99
    lam: float = 0.95
    value_loss_coef: float = 1.0
    entropy_coef: float = 0.005
    desired_kl: float = 0.01
    max_grad_norm: float = 1.0
    save_interval: int = 100
    """Write an rsl_rl checkpoint every this many iterations."""


def runner_config(cfg: PpoConfig) -> dict:
    """The ``train_cfg`` dict of rsl_rl's ``OnPolicyRunner`` (rsl-rl-lib 5.x layout)."""
    mlp = {"class_name": "MLPModel", "hidden_dims": list(cfg.hidden_dims),
           "activation": cfg.activation, "obs_normalization": True}
    return {
        "num_steps_per_env": cfg.num_steps_per_env,
        "save_interval": cfg.save_interval,
        "obs_groups": {"actor": [OBS_GROUP], "critic": [OBS_GROUP]},
        "logger": "tensorboard",
        "algorithm": {
            "class_name": "PPO",
            "num_learning_epochs": cfg.num_learning_epochs,
            "num_mini_batches": cfg.num_mini_batches,
            "clip_param": cfg.clip_param,
            "gamma": cfg.gamma,
            "lam": cfg.lam,
            "value_loss_coef": cfg.value_loss_coef,
            "entropy_coef": cfg.entropy_coef,
            "learning_rate": cfg.learning_rate,
            "max_grad_norm": cfg.max_grad_norm,
            "use_clipped_value_loss": True,
            "schedule": "adaptive",
            "desired_kl": cfg.desired_kl,
        },
        "actor": {**mlp, "distribution_cfg": {"class_name": "GaussianDistribution",
                                              "init_std": cfg.init_noise_std}},
        "critic": mlp,
    }


@functools.cache
def ppo_actor_class() -> type:
    """``PpoActor``: the deterministic rsl_rl actor as a tether network, z-scored observation
    window [B, 1, S], goal [B, G] (ignored: one task per policy) -> normalized action [B, A].

    Its attributes ``window`` (1) and ``kind`` (``"ppo"``) are what ``tether.policies.export``
    reads. Built on first use (torch is imported then).
    """
    from torch import nn

    class PpoActor(nn.Module):
        kind = "ppo"
        window = 1

        def __init__(self, mlp: nn.Module, output: nn.Module | None = None):
            super().__init__()
            self.mlp = mlp
            self.output = output or nn.Identity()

        def forward(self, obs, goal):
            return self.output(self.mlp(obs[:, -1]))

    return PpoActor


def actor_from_rsl_rl(model) -> tuple:
    """Copy the MLP of an rsl_rl ``MLPModel`` actor (CPU, eval mode); returns (actor, observation
    mean (S,), observation scale (S,) = std + eps, as rsl_rl's ``EmpiricalNormalization``)."""
    import copy

    mlp = copy.deepcopy(model.mlp).to("cpu").eval()
    output = model.distribution.as_deterministic_output_module() if model.distribution else None
    norm = model.obs_normalizer
    if hasattr(norm, "mean"):
        mean = norm.mean.detach().cpu().numpy()
        scale = (norm.std + norm.eps).detach().cpu().numpy()
    else:  # obs_normalization off: identity
        mean, scale = np.zeros(model.obs_dim, np.float32), np.ones(model.obs_dim, np.float32)
    return ppo_actor_class()(mlp, output).eval(), mean.astype(np.float32), scale.astype(np.float32)


def export_actor(model, spec, task: str, path, action_low: np.ndarray, action_high: np.ndarray):
    """Export an rsl_rl actor to ``path`` as a tether policy for ``task`` on ``spec``'s robot.

    Returns (path, max |torch - ONNX| over random inputs (normalized-action units x half range)).

    Raises:
        onnx.checker.ValidationError: the exported model is malformed.
    """
    from tether.policies.export import export_policy, parity

    actor, mean, scale = actor_from_rsl_rl(model)
    low, high = np.asarray(action_low, np.float32), np.asarray(action_high, np.float32)
    normalizer = Normalizer(mean, scale, (high + low) / 2, (high - low) / 2)
    out = export_policy(actor, normalizer, spec, [task], path)
    return out, parity(actor, normalizer, spec, out, tasks=1)
