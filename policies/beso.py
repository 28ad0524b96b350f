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
* DDIM sampling (the first-order DPM-solver form used by BESO's code) on an exponential sigma
  schedule; 3 steps by default.
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


class Beso(nn.Module):
    """BESO denoiser, loss and sampler.

    Args:
        cfg: settings.
        obs_dim, action_dim, goal_dim: vector sizes (S, A, G).
    """

    def __init__(self, cfg: BesoConfig, obs_dim: int, action_dim: int, goal_dim: int):
        super().__init__()
        self.cfg = cfg
        self.action_dim = action_dim
        self.net = CausalTransformerDenoiser(
            obs_dim, action_dim, goal_dim, cfg.window, cfg.d_model, cfg.n_layers, cfg.n_heads,
            cfg.dropout,
        )

    def denoise(
        self, x: torch.Tensor, sigma: torch.Tensor, obs: torch.Tensor, goal: torch.Tensor
    ) -> torch.Tensor:
        """D(x; sigma): x [B,T,A] noisy actions, sigma [B], obs [B,T,S], goal [B,G] -> [B,T,A]."""
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
    ) -> torch.Tensor:
        """EDM denoising loss for a batch: obs [B,T,S], actions [B,T,A] (normalized), goal [B,G]."""
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
        return ((pred - target) ** 2).mean()

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
        """DDIM sampling: obs [B,T,S], goal [B,G], noise [B,T,A] ~ N(0, I) -> actions [B,T,A].

        The loop is unrolled over a fixed schedule, so the whole sampler exports to ONNX.
        """
        sigmas = exponential_schedule(self.cfg.num_steps, self.cfg.sigma_min, self.cfg.sigma_max)
        x = noise * sigmas[0]
        ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            denoised = self.guided_denoise(x, ones * sigma, obs, goal)
            # DDIM / DPM-solver-1 in t = -ln(sigma): x' = (s'/s) x - expm1(-h) D, h = ln(s/s').
            x = denoised if sigma_next == 0 else (sigma_next / sigma) * x + (1 - sigma_next / sigma) * denoised
        return x
