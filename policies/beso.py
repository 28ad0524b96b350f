"""BESO: score-based diffusion goal-conditioned policy (Reuss et al., "Goal-Conditioned Imitation
Learning using Score-based Diffusion Policies", RSS 2023).

Facts implemented here (DESIGN.md; the paper's Sec. III-IV, following Karras et al., "Elucidating
the Design Space of Diffusion-Based Generative Models" (EDM), NeurIPS 2022):

* EDM preconditioning with sigma_data = 0.5: D(x; s) = c_skip x + c_out F(c_in x, c_noise),
  c_skip = sd^2 / (s^2 + sd^2), c_out = s sd / sqrt(s^2 + sd^2), c_in = 1 / sqrt(s^2 + sd^2),
  c_noise = ln(s) / 4.
* Training noise levels from a log-logistic density (loc ln 0.5, scale 0.5) clipped to
  [sigma_min, sigma_max] = [0.005, 1]; the EDM loss weighting, written as the equivalent
  regression of F onto (x0 - c_skip x) / c_out.
* Samplers from BESO's code base (after Karras et al. and k-diffusion): DDIM (the first-order
  DPM-solver form) and Euler-ancestral, on an exponential or a linear sigma schedule; 3 steps by
  default.
* Action chunks: with an action horizon H > 1 the policy denoises the T window actions and the
  H - 1 actions after them, and a robot executes actions t .. t + H - 1 (see the transformer).
* Classifier-free guidance: the goal is dropped (zeroed) with p = 0.1 per sample in training, and
  D = D_u + w (D_c - D_u) at sampling (w = 1: conditional; w = 0: goal-free play policy).

Actions are denoised in normalized units (roughly [-1, 1]); shapes are documented per method.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tether.policies.configs import BesoConfig
from tether.policies.transformer import CausalTransformerDenoiser


def edm_coefficients(sigma: torch.Tensor, sigma_data: float):
    """(c_skip, c_out, c_in, c_noise) of EDM preconditioning for noise levels ``sigma`` (any shape)."""
    s2 = sigma**2 + sigma_data**2
    return sigma_data**2 / s2, sigma * sigma_data / s2.sqrt(), 1 / s2.sqrt(), sigma.log() / 4


def sample_log_logistic(n: int, cfg: BesoConfig, generator: torch.Generator | None = None):
    """``n`` training noise levels: ln(sigma) ~ Logistic(sigma_loc, sigma_scale), clipped."""
    u = torch.rand(n, generator=generator).clamp(1e-6, 1 - 1e-6)
    log_sigma = cfg.sigma_loc + cfg.sigma_scale * (u.log() - (-u).log1p())
    return log_sigma.exp().clamp(cfg.sigma_min, cfg.sigma_max)


def exponential_schedule(num_steps: int, sigma_min: float, sigma_max: float) -> list[float]:
    """``num_steps`` noise levels log-spaced from sigma_max down to sigma_min, then 0."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if num_steps == 1:
        return [sigma_max, 0.0]
    ratio = math.log(sigma_min / sigma_max) / (num_steps - 1)
    return [sigma_max * math.exp(ratio * i) for i in range(num_steps)] + [0.0]


def linear_schedule(num_steps: int, sigma_min: float, sigma_max: float) -> list[float]:
    """``num_steps`` noise levels evenly spaced from sigma_max down to sigma_min, then 0."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if num_steps == 1:
        return [sigma_max, 0.0]
    step = (sigma_max - sigma_min) / (num_steps - 1)
    return [sigma_max - step * i for i in range(num_steps)] + [0.0]


SCHEDULES = {"exponential": exponential_schedule, "linear": linear_schedule}


def sigma_schedule(cfg: BesoConfig) -> list[float]:
    """The sampler's noise levels for ``cfg`` (``cfg.num_steps`` levels, then 0).

    Raises:
        ValueError: an unknown schedule or fewer than 1 step.
    """
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; choose from {sorted(SCHEDULES)}")
    return SCHEDULES[cfg.schedule](cfg.num_steps, cfg.sigma_min, cfg.sigma_max)


def noise_draws(cfg: BesoConfig) -> int:
    """How many [L, A] noise tensors one sample needs: the initial one, plus one per step for
    Euler-ancestral (its fresh noise is an input too, so a sample stays reproducible)."""
    return 1 + (cfg.num_steps if cfg.sampler == "euler_ancestral" else 0)


class Beso(nn.Module):
    """BESO denoiser, loss and sampler.

    Args:
        cfg: settings.
        obs_dim, action_dim, goal_dim: vector sizes (S, A, G).
    """

    def __init__(self, cfg: BesoConfig, obs_dim: int, action_dim: int, goal_dim: int):
        super().__init__()
        if cfg.sampler not in ("ddim", "euler_ancestral"):
            raise ValueError(f"unknown sampler {cfg.sampler!r}; choose ddim or euler_ancestral")
        sigma_schedule(cfg)  # fails now, not at the first sample, on a bad schedule
        self.cfg = cfg
        self.action_dim = action_dim
        self.length = cfg.window + cfg.action_horizon - 1
        self.net = CausalTransformerDenoiser(
            obs_dim, action_dim, goal_dim, cfg.window, cfg.d_model, cfg.n_layers, cfg.n_heads,
            cfg.dropout, cfg.action_horizon,
        )

    def denoise(
        self, x: torch.Tensor, sigma: torch.Tensor, obs: torch.Tensor, goal: torch.Tensor
    ) -> torch.Tensor:
        """D(x; sigma): x [B,L,A] noisy actions (L = T + H - 1), sigma [B], obs [B,T,S], goal [B,G]
        -> [B,L,A]."""
        c_skip, c_out, c_in, c_noise = (
            c.view(-1, 1, 1) for c in edm_coefficients(sigma, self.cfg.sigma_data)
        )
        out = self.net(c_in * x, c_noise.view(-1, 1), obs, goal)
        return c_skip * x + c_out * out

    def loss(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        goal: torch.Tensor,
        generator: torch.Generator | None = None,
        action_pad: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """EDM denoising loss for a batch: obs [B,T,S], actions [B,L,A] (normalized), goal [B,G];
        ``action_pad`` [B,L] marks actions past the episode's end (repeats of its last action),
        left out of the loss as LeRobot's ``*_is_pad`` masks are."""
        b = actions.shape[0]
        sigma = sample_log_logistic(b, self.cfg, generator).to(actions)
        keep = (torch.rand(b, 1, generator=generator) >= self.cfg.goal_drop_prob).to(goal)
        noise = torch.randn(actions.shape, generator=generator).to(actions)
        x = actions + sigma.view(-1, 1, 1) * noise
        c_skip, c_out, c_in, c_noise = (
            c.view(-1, 1, 1) for c in edm_coefficients(sigma, self.cfg.sigma_data)
        )
        pred = self.net(c_in * x, c_noise.view(-1, 1), obs, goal * keep)
        target = (actions - c_skip * x) / c_out
        return masked_mse(pred, target, action_pad)

    def guided_denoise(
        self, x: torch.Tensor, sigma: torch.Tensor, obs: torch.Tensor, goal: torch.Tensor
    ) -> torch.Tensor:
        """D with classifier-free guidance weight ``cfg.guidance_weight``."""
        w = self.cfg.guidance_weight
        if w == 1.0:
            return self.denoise(x, sigma, obs, goal)
        if w == 0.0:
            return self.denoise(x, sigma, obs, torch.zeros_like(goal))
        b = x.shape[0]
        both = self.denoise(
            torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([obs, obs]),
            torch.cat([goal, torch.zeros_like(goal)]),
        )
        d_c, d_u = both[:b], both[b:]
        return d_u + w * (d_c - d_u)

    def sample(self, obs: torch.Tensor, goal: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample actions: obs [B,T,S], goal [B,G], noise [B, K*L, A] ~ N(0, I) -> actions [B,L,A],
        with L = T + H - 1 and K = ``noise_draws(cfg)`` (1 for DDIM).

        The loop is unrolled over a fixed schedule, so the whole sampler exports to ONNX.
        """
        sigmas = sigma_schedule(self.cfg)
        expected = noise_draws(self.cfg) * self.length
        if noise.shape[1] != expected:
            raise ValueError(f"noise has {noise.shape[1]} steps; this sampler needs {expected}")
        draws = noise.split(self.length, dim=1)
        x = draws[0] * sigmas[0]
        ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
            denoised = self.guided_denoise(x, ones * sigma, obs, goal)
            if sigma_next == 0:
                x = denoised
            elif self.cfg.sampler == "ddim":
                # DPM-solver-1 in t = -ln(sigma): x' = (s'/s) x - expm1(-h) D, h = ln(s/s').
                x = (sigma_next / sigma) * x + (1 - sigma_next / sigma) * denoised
            else:
                # Euler-ancestral (k-diffusion's sample_euler_ancestral, eta = 1): an Euler step
                # down to sigma_down, then fresh noise of std sigma_up back up to sigma_next.
                sigma_up = min(sigma_next, (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
                sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
                x = x + (x - denoised) / sigma * (sigma_down - sigma) + draws[i + 1] * sigma_up
        return x


def masked_mse(pred: torch.Tensor, target: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over [B,L,A], leaving out positions where ``pad`` [B,L] is True."""
    err = (pred - target) ** 2
    if pad is None:
        return err.mean()
    keep = (~pad).to(err).unsqueeze(-1)
    return (err * keep).sum() / (keep.sum() * err.shape[-1]).clamp(min=1)
