"""Causal transformer denoiser over ``[sigma, goal, (observation, action) x T, action x (H-1)]`` (BESO).

BESO (Reuss et al., RSS 2023, Sec. IV) denoises a window of T actions with a GPT-style
transformer whose tokens are the noise level, the goal, and the interleaved observation and
action tokens of the window; a causal mask lets the action at step t attend to the noise level,
the goal, and the observations and actions up to t. With an action horizon H > 1 the H - 1
future actions (an action chunk, whose observations are not known yet) follow as action tokens
alone, so the policy predicts actions t .. t + H - 1 from the observations up to t.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _Block(nn.Module):
    """Pre-LayerNorm transformer block with masked multi-head self-attention."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )
        self.drop = nn.Dropout(dropout)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.n_heads, d // self.n_heads).unbind(2)
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.mlp(self.ln2(x)))


class CausalTransformerDenoiser(nn.Module):
    """The network F_theta inside BESO's EDM-preconditioned denoiser.

    Args:
        obs_dim: observation vector size S.
        action_dim: action size A.
        goal_dim: goal vector size G (a task one-hot or a goal observation).
        window: T, the number of (observation, action) pairs.
        d_model, n_layers, n_heads, dropout: transformer size.
        action_horizon: H, actions predicted from the last observation on (1: one action).

    ``forward(x [B,L,A], c_noise [B,1], obs [B,T,S], goal [B,G]) -> [B,L,A]`` with L = T + H - 1.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        goal_dim: int,
        window: int,
        d_model: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        dropout: float = 0.05,
        action_horizon: int = 1,
    ):
        super().__init__()
        if action_horizon < 1:
            raise ValueError(f"action_horizon must be >= 1, got {action_horizon}")
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.window = window
        self.action_horizon = action_horizon
        self.sigma_emb = nn.Sequential(nn.Linear(1, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
        self.goal_emb = nn.Linear(goal_dim, d_model)
        self.obs_emb = nn.Linear(obs_dim, d_model)
        self.action_emb = nn.Linear(action_dim, d_model)
        n_tokens = 2 + 2 * window + action_horizon - 1
        self.pos_emb = nn.Parameter(torch.zeros(1, n_tokens, d_model))
        nn.init.normal_(self.pos_emb, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, action_dim)
        # True = may attend; token i sees tokens 0..i.
        self.register_buffer("mask", torch.ones(n_tokens, n_tokens, dtype=torch.bool).tril())

    def forward(
        self, x: torch.Tensor, c_noise: torch.Tensor, obs: torch.Tensor, goal: torch.Tensor
    ) -> torch.Tensor:
        b, t = obs.shape[:2]
        act_tok = self.action_emb(x)
        pairs = torch.stack([self.obs_emb(obs), act_tok[:, :t]], dim=2).reshape(b, 2 * t, -1)
        tokens = torch.cat(
            [self.sigma_emb(c_noise).unsqueeze(1), self.goal_emb(goal).unsqueeze(1), pairs,
             act_tok[:, t:]],
            dim=1,
        )
        h = self.drop(tokens + self.pos_emb)
        for block in self.blocks:
            h = block(h, self.mask)
        h = self.ln_f(h)
        # the action tokens: every second one of the pairs, then the future ones
        return self.head(torch.cat([h[:, 3 : 2 + 2 * t : 2], h[:, 2 + 2 * t :]], dim=1))
