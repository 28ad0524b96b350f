"""Intention-conditioned value functions (ICVF): value pre-training on action-free video.

Ghosh, Bhateja, Levine, "Reinforcement Learning from Passive Data via Latent Intentions", ICML
2023; used by V-PTR (Bhateja, Ghosh et al., "Robotic Offline RL from Internet Videos via
Value-Function Pre-Training", 2023) to pre-train the image encoder of offline RL. Facts
implemented:

* The value of reaching outcome g from state s while acting on intention z is multilinear:
  V(s, g, z) = phi(s)^T T(z) psi(g), with phi(s), psi(g) in R^d and T(z) a d x d matrix
  (:func:`multilinear_value`). Intentions are outcomes too: T reads psi of the intent's frame.
* Reward r(s, g) = 1[s = g] - 1 (0 at the goal, -1 elsewhere), and reaching the goal ends the
  episode (no bootstrap), gamma = 0.99 (:func:`icvf_reward`).
* TD target y = r(s, g) + gamma (1 - 1[s = g]) min_k V'_k(s', g, z) from the target heads.
* The intent's own advantage A = r(s, z) + gamma (1 - 1[s = z]) min_k V'_k(s', z, z) - mean_k
  V'_k(s, z, z) says whether the transition s -> s' is one an agent with intention z would take;
  each head regresses onto y with the expectile loss |tau - 1(A < 0)| (y - V_k(s, g, z))^2,
  tau = 0.9 (:func:`intent_expectile_loss`): the upper expectile over transitions that follow z.
* Twin value heads, and a target network (encoder and heads) by Polyak averaging with rate 0.005
  after every optimizer step (:meth:`Icvf.after_step`).

One :class:`~tether.policies.networks.ImageEncoder` feeds phi, psi and T (our choice: one set of
convolutional weights is what V-PTR's downstream offline RL reuses, so it transfers 1:1 into IQL's
image encoder; see ``tether.policies.pretrained_encoder``).

Inputs are camera frames as they come, uint8 [B, H, W, 3] RGB.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from tether.policies.configs import IcvfConfig
from tether.policies.iql import check_expectile_td
from tether.policies.networks import ImageEncoder, mlp


def multilinear_value(phi: torch.Tensor, t: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """V = phi^T T psi per sample: phi [B, d], t [B, d, d], psi [B, d] -> [B]."""
    return torch.einsum("bi,bij,bj->b", phi, t, psi)


def icvf_reward(reached: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ICVF's reward and bootstrap mask for goal-reaching: ``reached`` [B] (bool or 0/1, s = g)
    -> (reward [B] = 1[s = g] - 1, mask [B] = 1 - 1[s = g]), both float."""
    reached = reached.float()
    return reached - 1.0, 1.0 - reached


def intent_expectile_loss(diff: torch.Tensor, advantage: torch.Tensor, expectile: float) -> torch.Tensor:
    """Mean of |tau - 1(A < 0)| u^2 with u = ``diff`` [B] (target - V) and A = ``advantage`` [B]:
    unlike IQL's expectile (the sign of u), the intent's advantage picks the weight."""
    weight = torch.where(advantage < 0, 1.0 - expectile, expectile)
    return (weight * diff**2).mean()


class MultilinearHead(nn.Module):
    """phi, psi and T on image features: V(s, g, z) from features fs, fg, fz [B, F] -> [B].

    phi, psi: MLPs F -> d; T: an MLP d -> d * d on psi(z), reshaped to [B, d, d].
    """

    def __init__(self, feature_dim: int, hidden: tuple[int, ...], latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.phi = mlp(feature_dim, hidden, latent_dim)
        self.psi = mlp(feature_dim, hidden, latent_dim)
        self.t = mlp(latent_dim, hidden, latent_dim * latent_dim)

    def forward(self, fs: torch.Tensor, fg: torch.Tensor, fz: torch.Tensor) -> torch.Tensor:
        d = self.latent_dim
        t = self.t(self.psi(fz)).view(-1, d, d)
        return multilinear_value(self.phi(fs), t, self.psi(fg))


class Icvf(nn.Module):
    """ICVF learner: image encoder, twin multilinear heads and their target network.

    Args:
        cfg: settings (``IcvfConfig``).

    Attributes:
        encoder: the :class:`ImageEncoder` (``cfg.channels``, ``cfg.feature_dim``) to transfer.
        heads: the twin :class:`MultilinearHead`.
        target: Polyak-averaged copies, ``target["encoder"]`` and ``target["heads"]``.
        metrics: floats of the last ``loss`` call.

    Raises:
        ValueError: expectile outside (0, 1), tau outside (0, 1], discount outside [0, 1).
    """

    def __init__(self, cfg: IcvfConfig):
        super().__init__()
        check_expectile_td(cfg.expectile, cfg.tau, cfg.discount)
        self.cfg = cfg
        self.encoder = ImageEncoder(cfg.channels, cfg.feature_dim)
        self.heads = nn.ModuleList(MultilinearHead(cfg.feature_dim, cfg.hidden, cfg.latent_dim) for _ in range(2))
        self.target = nn.ModuleDict({"encoder": copy.deepcopy(self.encoder), "heads": copy.deepcopy(self.heads)})
        self.target.requires_grad_(False)
        self.metrics: dict[str, float] = {}

    def _values(self, heads: nn.ModuleList, fs, fg, fz) -> torch.Tensor:
        """[2, B]: each head's V."""
        return torch.stack([h(fs, fg, fz) for h in heads])

    def loss(self, obs, next_obs, goal, intent, at_goal, at_intent) -> torch.Tensor:
        """Sum over the twin heads of the intent-weighted expectile TD loss.

        Args:
            obs, next_obs, goal, intent: uint8 [B, H, W, 3] frames s, s', g and the intent's z.
            at_goal, at_intent: [B] bool, whether s is the goal frame / the intent frame itself.

        Returns:
            scalar loss.
        """
        cfg, b = self.cfg, len(obs)
        fs, fg, fz = self.encoder(torch.cat([obs, goal, intent])).split(b)
        with torch.no_grad():
            ts, tn, tg, tz = self.target["encoder"](torch.cat([obs, next_obs, goal, intent])).split(b)
            heads = self.target["heads"]
            r_g, m_g = icvf_reward(at_goal)
            r_z, m_z = icvf_reward(at_intent)
            target = r_g + cfg.discount * m_g * self._values(heads, tn, tg, tz).min(0).values
            q_zz = r_z + cfg.discount * m_z * self._values(heads, tn, tz, tz).min(0).values
            advantage = q_zz - self._values(heads, ts, tz, tz).mean(0)
        v = self._values(self.heads, fs, fg, fz)
        losses = [intent_expectile_loss(target - v_k, advantage, cfg.expectile) for v_k in v]
        self.metrics = {"value_loss": float(sum(losses).detach()), "v": float(v.detach().mean()),
                        "target": float(target.mean()), "advantage": float(advantage.mean()),
                        "positive_advantage": float((advantage >= 0).float().mean())}
        return sum(losses)

    @torch.no_grad()
    def value(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The goal-reaching value V(s, g, z = g), mean of the twin online heads.

        Args:
            obs: uint8 [B, H, W, 3]. goal: uint8 [B, H, W, 3], or [1, H, W, 3] for one goal.

        Returns:
            float [B]: about -(1 - gamma^k) / (1 - gamma) for a goal k steps ahead.
        """
        fs = self.encoder(obs)
        fg = self.encoder(goal).expand(len(obs), -1)
        return self._values(self.heads, fs, fg, fg).mean(0)

    @torch.no_grad()
    def after_step(self) -> None:
        """Polyak update of the target network: target <- (1 - tau) target + tau online."""
        online = [*self.encoder.parameters(), *self.heads.parameters()]
        target = [*self.target["encoder"].parameters(), *self.target["heads"].parameters()]
        torch._foreach_lerp_(target, online, self.cfg.tau)


def load_icvf(path: Path | str) -> tuple[Icvf, dict]:
    """The value model ``tether pretrain-value`` wrote to ``icvf.pt`` (EMA weights, eval mode),
    and the payload (``config``, ``image_shape`` (H, W, 3), ``preprocessing``).

    Raises:
        FileNotFoundError: no such file. ValueError: not an ICVF checkpoint.
    """
    payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("kind") != "icvf":
        raise ValueError(f"{path} is not a tether ICVF checkpoint (tether pretrain-value writes OUT/icvf.pt)")
    c = payload["config"]
    cfg = IcvfConfig(**{**c, "hidden": tuple(c["hidden"]), "channels": tuple(c["channels"])})
    model = Icvf(cfg)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload
