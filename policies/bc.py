"""Behaviour cloning, the baseline of offline RL on the same data: the IQL actor's network
(``tether.policies.iql.IqlActor``, same size and inputs) fit by maximum likelihood (Gaussian) or
squared error (deterministic) with every sample weighted 1, i.e. IQL's actor loss with beta = 0.
"""

from __future__ import annotations

import torch
from torch import nn

from tether.policies.configs import IqlConfig
from tether.policies.iql import Features, IqlActor
from tether.policies.networks import ImageEncoder


class BehaviourCloning(nn.Module):
    """BC learner; an image encoder, if any, is trained by the BC loss.

    Accepts IQL's batches (``reward``, ``next_obs``... are ignored)."""

    def __init__(self, cfg: IqlConfig, obs_dim: int, action_dim: int, goal_dim: int,
                 camera: str | None = None, image_shape: tuple[int, ...] | None = None):
        super().__init__()
        image = cfg.encoder == "image"
        if image and camera is None:
            raise ValueError("encoder=image needs a camera")
        encoder = ImageEncoder(cfg.channels, 64) if image else None
        self.actor = IqlActor(Features(obs_dim, goal_dim, encoder, cfg.state_dims), action_dim, cfg.hidden,
                              cfg.actor == "gaussian", "bc", (camera,) if image else (),
                              image_shape if image else None)
        self.metrics: dict[str, float] = {}

    def loss(self, obs, actions, goal, image=None, **_) -> torch.Tensor:
        """Mean negative log-likelihood (or squared error) of the data's actions."""
        loss = self.actor.nll(obs, goal, actions, image).mean()
        self.metrics = {"actor_loss": float(loss.detach())}
        return loss

