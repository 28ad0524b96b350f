"""Soft actor-critic (SAC) with a critic ensemble: the online learner of WSRL and RLPD, and the base
of Cal-QL.

Facts implemented:

* SAC (Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", 2018): a tanh-squashed
  Gaussian actor pi(a|s) trained by reparameterization on alpha log pi(a|s) - Q(s, a); the soft
  TD target r + gamma (1 - d) (Q'(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s'); the temperature
  alpha learned so the policy's entropy tracks a target: L_alpha = -alpha (log pi + H_target).
* RLPD (Ball et al., "Efficient Online Reinforcement Learning with Offline Data", ICML 2023) and
  WSRL (Zhou et al., "Efficient Online Reinforcement Learning Fine-Tuning Need Not Retain Offline
  Data", ICLR 2025): an ensemble of E = 10 critics with LayerNorm, the TD target's minimum over a
  random subset of 2 target critics drawn per update, the actor maximizing the ensemble's mean Q,
  target entropy -A/2, update-to-data ratio (UTD) as a setting (``SacConfig.utd``, used by
  ``tether.policies.learner``).
* Target critics by Polyak averaging after every optimizer step (:meth:`Sac.after_step`).

One optimizer steps the critic, actor and temperature losses, as ``tether.policies.train`` wants
(``loss(**batch)`` + ``after_step()``): their gradients reach disjoint parameters (the actor's Q is
computed with the critics' parameters frozen, targets and alpha are detached).

Inputs: ``obs``/``next_obs`` [B, 1, S] z-scored states, ``goal`` [B, G] the task one-hot, actions
[B, A] scaled to [-1, 1], ``reward``/``done`` [B]. The exported policy (``tether.policies.export``,
``kind`` "sac" or "calql") is the mean action tanh(mu(s)); :class:`ExplorationPolicy` exports the
sampling policy tanh(mu + sigma * noise) with the noise as a graph input, which
``tether.robot.runner.PolicyRunner`` feeds from its seeded generator.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from tether.policies.configs import SacConfig
from tether.policies.iql import LOG_STD_MAX, LOG_STD_MIN, Features
from tether.policies.networks import mlp


class EnsembleLinear(nn.Module):
    """E independent linear layers applied at once: x [E, B, in] -> [E, B, out] (one batched
    matmul, so 10 critics cost about one larger layer on a CPU)."""

    def __init__(self, members: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default initialization, per member
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dimension with a scale and shift per member: [E, B, D]."""

    def __init__(self, members: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, 1, dim))
        self.bias = nn.Parameter(torch.zeros(members, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


class CriticEnsemble(nn.Module):
    """E critics Q_i(s, a): features [B, D] and actions [B, A] -> [E, B]; or, with a leading
    ensemble axis already, [E, B, D] and [E, B, A] (a different batch per member)."""

    def __init__(self, members: int, in_dim: int, hidden: tuple[int, ...], layer_norm: bool):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers.append(EnsembleLinear(members, width, h))
            if layer_norm:
                layers.append(EnsembleLayerNorm(members, h))
            layers.append(nn.ReLU())
            width = h
        layers.append(EnsembleLinear(members, width, 1))
        self.net = nn.Sequential(*layers)
        self.members = members

    def forward(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = torch.cat([features, actions], -1)
        if x.dim() == 2:
            x = x.expand(self.members, *x.shape)
        return self.net(x).squeeze(-1)


class TanhGaussianActor(nn.Module):
    """pi(a|s) = tanh(N(mu(s), sigma(s)^2)), a in (-1, 1)^A.

    ``forward(obs, goal)`` is the mean action tanh(mu) [B, A] (what ``tether eval`` runs after
    export); ``sample`` draws reparameterized actions with their log-density.

    Attributes:
        kind: "sac" or "calql" (``tether.policy`` metadata). window: 1. image_keys: ().
    """

    window = 1
    image_keys: tuple[str, ...] = ()
    image_shape = None

    def __init__(self, features: Features, action_dim: int, hidden: tuple[int, ...], kind: str = "sac"):
        super().__init__()
        self.features = features
        self.net = mlp(features.dim, hidden, 2 * action_dim)
        self.action_dim = action_dim
        self.kind = kind

    def distribution(self, obs: torch.Tensor, goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_std) of the pre-tanh Gaussian, each [B, A]; log_std clipped to [-5, 2]."""
        mu, log_std = self.net(self.features(obs, goal)).chunk(2, -1)
        return mu, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def forward(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Mean action, normalized: [B, A]."""
        return torch.tanh(self.distribution(obs, goal)[0])

    def sample(self, obs: torch.Tensor, goal: torch.Tensor, n: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized actions and log pi(a|s): ([B, A], [B]), or with ``n`` draws per state
        ([n, B, A], [n, B]).

        log pi(a|s) = log N(u; mu, sigma) - sum log(1 - tanh(u)^2), the change of variables of the
        tanh squashing (SAC, Appendix C), computed as 2 (log 2 - u - softplus(-2u)) for stability.
        """
        mu, log_std = self.distribution(obs, goal)
        shape = mu.shape if n is None else (n, *mu.shape)
        u = mu + log_std.exp() * torch.randn(shape, dtype=mu.dtype, device=mu.device)
        log_prob = torch.distributions.Normal(mu, log_std.exp()).log_prob(u)
        log_prob = log_prob - 2 * (math.log(2) - u - nn.functional.softplus(-2 * u))
        return torch.tanh(u), log_prob.sum(-1)


class ExplorationPolicy(nn.Module):
    """The sampling policy for export: obs [B, 1, S], goal [B, G], noise [B, 1, A] ~ N(0, I) ->
    tanh(mu + sigma * noise) [B, A] (normalized). ``noise_input`` tells the exporter to add the
    ``noise`` input; with zero noise this is the mean action."""

    window = 1
    image_keys: tuple[str, ...] = ()
    noise_input = True

    def __init__(self, actor: TanhGaussianActor):
        super().__init__()
        self.actor = actor
        self.kind = actor.kind

    def forward(self, obs: torch.Tensor, goal: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        mu, log_std = self.actor.distribution(obs, goal)
        return torch.tanh(mu + log_std.exp() * noise[:, 0])


class Sac(nn.Module):
    """SAC learner: actor, critic ensemble, target critics and the entropy temperature.

    Args:
        cfg: settings (``SacConfig``).
        obs_dim, action_dim, goal_dim: S, A, G.
        kind: the exported actor's kind ("sac"; Cal-QL passes "calql").

    Raises:
        ValueError: ``subset`` not in 1..``critics``, or ``tau``/``discount`` out of range.

    Attributes:
        metrics: floats of the last ``loss`` call (losses, mean Q, alpha, entropy).
    """

    def __init__(self, cfg: SacConfig, obs_dim: int, action_dim: int, goal_dim: int, kind: str = "sac"):
        super().__init__()
        if not 1 <= cfg.subset <= cfg.critics:
            raise ValueError(f"need 1 <= subset <= critics, got subset {cfg.subset} of {cfg.critics}")
        if not 0 < cfg.tau <= 1 or not 0 <= cfg.discount < 1:
            raise ValueError(f"need 0 < tau <= 1 and 0 <= discount < 1, got {cfg.tau}, {cfg.discount}")
        if cfg.actor_every < 1 or cfg.utd < 1:
            raise ValueError(f"actor_every and utd must be >= 1, got {cfg.actor_every}, {cfg.utd}")
        self.cfg = cfg
        self.action_dim = action_dim
        self.features = Features(obs_dim, goal_dim)  # parameter-free for states: shared as is
        d = self.features.dim
        self.critics = CriticEnsemble(cfg.critics, d + action_dim, cfg.hidden, cfg.layer_norm)
        self.target = copy.deepcopy(self.critics)
        self.target.requires_grad_(False)
        self.actor = TanhGaussianActor(self.features, action_dim, cfg.hidden, kind)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.init_temperature)))
        self.target_entropy = -action_dim / 2 if cfg.target_entropy is None else cfg.target_entropy
        self.metrics: dict[str, float] = {}
        self._calls = 0

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp().detach()

    def subset_min(self, q: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """min over ``cfg.subset`` members drawn at random (one draw for the whole batch, as
        RLPD) of q [E, ...] -> [...]."""
        pick = torch.randperm(q.shape[0], generator=generator)[: self.cfg.subset]
        return q[pick].min(0).values

    def td_target(self, next_obs, reward, done, goal) -> torch.Tensor:
        """Soft TD target [B] (no gradient)."""
        with torch.no_grad():
            f_next = self.features(next_obs, goal)
            next_action, next_logp = self.actor.sample(next_obs, goal)
            q_next = self.subset_min(self.target(f_next, next_action))
            if self.cfg.backup_entropy:
                q_next = q_next - self.alpha * next_logp
            return reward + self.cfg.discount * (1.0 - done) * q_next

    def actor_losses(self, obs, goal, features) -> tuple[torch.Tensor, dict[str, float]]:
        """Actor and temperature losses; the critics' parameters get no gradient from them."""
        self.critics.requires_grad_(False)
        try:
            action, logp = self.actor.sample(obs, goal)
            q_pi = self.critics(features, action).mean(0)
        finally:
            self.critics.requires_grad_(True)
        actor_loss = (self.alpha * logp - q_pi).mean()
        alpha_loss = -(self.log_alpha.exp() * (logp.detach() + self.target_entropy)).mean()
        return actor_loss + alpha_loss, {"actor_loss": float(actor_loss.detach()),
                                         "alpha_loss": float(alpha_loss.detach()),
                                         "entropy": float(-logp.detach().mean())}

    def loss(self, obs, actions, reward, next_obs, done, goal, **extra) -> torch.Tensor:
        """Critic (+ actor and temperature, every ``actor_every`` calls) loss of a batch.

        Args:
            obs, next_obs: [B, 1, S] normalized states. actions: [B, A] in [-1, 1].
            reward: [B]. done: [B] 1.0 where terminal. goal: [B, G].
            extra: other batch columns (``mc_return``, ``intervention``, ...), unused by SAC.
        """
        features = self.features(obs, goal)
        target = self.td_target(next_obs, reward, done, goal)
        q = self.critics(features, actions)  # [E, B]
        critic_loss = ((q - target) ** 2).mean(1).sum()
        self.metrics = {"critic_loss": float(critic_loss.detach()), "q": float(q.detach().mean()),
                        "target": float(target.mean()), "alpha": float(self.alpha)}
        total = critic_loss + self.critic_regularizer(obs, next_obs, goal, features, q, **extra)
        self._calls += 1
        if self._calls % self.cfg.actor_every == 0:
            actor_loss, metrics = self.actor_losses(obs, goal, features.detach())
            total = total + actor_loss
            self.metrics.update(metrics)
        return total

    def critic_regularizer(self, obs, next_obs, goal, features, q_data, **extra) -> torch.Tensor:
        """An extra critic loss (Cal-QL's CQL term); plain SAC has none: 0."""
        return torch.zeros(())

    @torch.no_grad()
    def after_step(self) -> None:
        """Polyak update of the target critics: target <- (1 - tau) target + tau online."""
        torch._foreach_lerp_(list(self.target.parameters()), list(self.critics.parameters()), self.cfg.tau)
