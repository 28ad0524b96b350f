"""GCBC: goal-conditioned behaviour cloning on BESO's backbone, the baseline of BESO's paper.

The same causal transformer as BESO (``tether.policies.transformer``), with the same window,
action horizon and goal input, regresses the actions directly (mean squared error) instead of
denoising them: its action tokens get zeros and its noise-level token a constant, so the two
policies differ only in the objective. BESO (Reuss et al., RSS 2023) reports GCBC at 2.57 of 4
goals on Relay Kitchen against BESO's 3.76.
"""

from __future__ import annotations

import torch
from torch import nn

from tether.policies.beso import masked_mse
from tether.policies.configs import BesoConfig
from tether.policies.transformer import CausalTransformerDenoiser


class Gcbc(nn.Module):
    """Deterministic goal-conditioned policy.

    Args:
        cfg: the network settings of ``BesoConfig`` (window, action_horizon, size, dropout; the
            diffusion and guidance settings are unused: goals are never dropped).
        obs_dim, action_dim, goal_dim: vector sizes (S, A, G).
    """

    def __init__(self, cfg: BesoConfig, obs_dim: int, action_dim: int, goal_dim: int):
        super().__init__()
        self.cfg = cfg
        self.action_dim = action_dim
        self.length = cfg.window + cfg.action_horizon - 1
        self.net = CausalTransformerDenoiser(
            obs_dim, action_dim, goal_dim, cfg.window, cfg.d_model, cfg.n_layers, cfg.n_heads,
            cfg.dropout, cfg.action_horizon,
        )

    def forward(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """obs [B,T,S] (normalized), goal [B,G] -> actions [B,L,A] (normalized), L = T + H - 1."""
        b = obs.shape[0]
        x = torch.zeros(b, self.length, self.action_dim, dtype=obs.dtype, device=obs.device)
        return self.net(x, torch.zeros(b, 1, dtype=obs.dtype, device=obs.device), obs, goal)

    def loss(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        goal: torch.Tensor,
        generator: torch.Generator | None = None,
        action_pad: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """MSE to the data's actions [B,L,A] (``generator`` is unused: the loss is deterministic)."""
        return masked_mse(self(obs, goal), actions, action_pad)
