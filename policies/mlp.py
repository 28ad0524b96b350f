"""A goal-conditioned MLP policy: behaviour cloning with a mean-squared-error loss.

The simplest baseline for BESO (goal-conditioned BC, as GCBC in Lynch et al., 2019, without the
latent plan), and the MLP of ``tether bench loop``. Shapes: obs [B,T,S] (the last frame is used),
goal [B,G], actions [B,T,A] in normalized units; the output is tanh-squashed to [-1, 1].
"""

from __future__ import annotations

import torch
from torch import nn


class MlpPolicy(nn.Module):
    """obs (S) + goal (G) -> action (A), ``hidden`` ReLU layers (default 2 x 256)."""

    def __init__(self, obs_dim: int, action_dim: int, goal_dim: int, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        width = obs_dim + goal_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers += [nn.Linear(width, action_dim), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.window = 1

    def forward(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """obs [B,T,S], goal [B,G] -> normalized action [B,A]."""
        return self.net(torch.cat([obs[:, -1], goal], dim=-1))

    def loss(self, obs: torch.Tensor, actions: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Mean squared error to the last action of the window (normalized units)."""
        return ((self(obs, goal) - actions[:, -1]) ** 2).mean()
