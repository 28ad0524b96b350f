"""Implicit Q-learning (IQL): offline RL without querying actions outside the dataset.

Kostrikov, Nair, Levine, "Offline Reinforcement Learning with Implicit Q-Learning", ICLR 2022.
Facts implemented (Sec. 4 and Algorithm 1; defaults of RL-VLM-F's offline follow-up,
Venkataraman et al., 2024: expectile 0.7, beta 3, 2 x 256 MLPs):

* V(s) by expectile regression onto the target critics: L_V = E[L2^tau(min_i Q'_i(s, a) - V(s))],
  L2^tau(u) = |tau - 1(u < 0)| u^2 (:func:`expectile_loss`).
* Twin critics by TD onto V: L_Q = E[sum_i (r + gamma (1 - d) V(s') - Q_i(s, a))^2].
* Target critics Q' by Polyak averaging, Q' <- (1 - tau_p) Q' + tau_p Q with tau_p = 0.005 after
  every optimizer step (:meth:`Iql.after_step`, called by ``tether.policies.train.train``).
* The actor by advantage-weighted regression (AWR; Peng et al., 2019):
  L_pi = -E[min(exp(beta (min_i Q'_i(s, a) - V(s))), max_weight) log pi(a | s)], weights clipped
  at 100. The policy is a Gaussian with a tanh-squashed mean and a state-independent log-std (as
  IQL's released code), or deterministic (weighted squared error). The exported policy is the mean.

One optimizer steps all three losses: their gradients reach disjoint parameters (targets are
detached), and Adam's updates are per parameter, so this equals separate optimizers up to the
shared gradient-norm clip and learning-rate schedule of the training loop.

Inputs: ``obs`` [B, T, S] z-scored states (the last of the window is used), ``goal`` [B, G] the
task one-hot, optionally ``image`` [B, H, W, 3] uint8; actions [B, A] scaled to [-1, 1].
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from tether.policies.configs import IqlConfig
from tether.policies.networks import ImageEncoder, mlp

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
"""Bounds of the actor's log-std (IQL's released code)."""


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Mean of L2^tau(u) = |tau - 1(u < 0)| u^2 over ``diff`` = u (any shape): tau > 0.5 weights
    positive errors more, so V tends to an upper expectile of Q over the data's actions."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff**2).mean()


def check_expectile_td(expectile: float, tau: float, discount: float) -> None:
    """Check the settings an expectile TD learner (IQL, ICVF) shares.

    Raises:
        ValueError: expectile outside (0, 1), tau (the target networks' Polyak rate) outside
            (0, 1], or discount outside [0, 1).
    """
    if not 0 < expectile < 1:
        raise ValueError(f"expectile must be in (0, 1), got {expectile}")
    if not 0 < tau <= 1 or not 0 <= discount < 1:
        raise ValueError(f"need 0 < tau <= 1 and 0 <= discount < 1, got {tau}, {discount}")


class Features(nn.Module):
    """State (+ goal) (+ camera frame) -> one feature vector.

    obs [B, T, S] (last frame; only ``state_dims`` of it when given), goal [B, G], image uint8
    [B, H, W, 3] or None -> [B, D].
    """

    def __init__(self, obs_dim: int, goal_dim: int, encoder: ImageEncoder | None = None,
                 state_dims: tuple[int, ...] | None = None):
        super().__init__()
        self.encoder = encoder
        self.state_dims = None if state_dims is None else tuple(int(i) for i in state_dims)
        if self.state_dims is not None:
            bad = [i for i in self.state_dims if not 0 <= i < obs_dim]
            if bad or not self.state_dims:
                raise ValueError(f"state_dims must be indices of the {obs_dim} state elements, got {state_dims}")
            self.register_buffer("state_index", torch.tensor(self.state_dims, dtype=torch.long))
        width = obs_dim if self.state_dims is None else len(self.state_dims)
        self.dim = width + goal_dim + (encoder.out_dim if encoder is not None else 0)

    def forward(self, obs: torch.Tensor, goal: torch.Tensor, image: torch.Tensor | None = None,
                detach_image: bool = False) -> torch.Tensor:
        state = obs[:, -1] if self.state_dims is None else obs[:, -1].index_select(-1, self.state_index)
        parts = [state, goal]
        if self.encoder is not None:
            if image is None:
                raise ValueError("this network reads a camera frame: pass image")
            z = self.encoder(image)
            parts.append(z.detach() if detach_image else z)
        return torch.cat(parts, -1)


class IqlActor(nn.Module):
    """The policy: features -> tanh-squashed mean action [B, A] in [-1, 1].

    ``forward(obs, goal[, image])`` is what ONNX export runs (the mean); ``log_prob`` is the
    Gaussian N(mean, exp(log_std)^2) density of dataset actions.

    Attributes:
        kind: "iql" (``tether.policy`` metadata). window: 1. image_keys: the camera feature an
            image actor reads, else (). gaussian: whether it has a log-std.
    """

    window = 1

    def __init__(self, features: Features, action_dim: int, hidden: tuple[int, ...], gaussian: bool,
                 kind: str = "iql", image_keys: tuple[str, ...] = (), image_shape: tuple[int, ...] | None = None):
        super().__init__()
        self.features = features
        self.net = mlp(features.dim, hidden, action_dim)
        self.gaussian = gaussian
        self.log_std = nn.Parameter(torch.zeros(action_dim)) if gaussian else None
        self.kind = kind
        self.image_keys = tuple(image_keys)
        self.image_shape = image_shape
        # IQL's actor reads the critics' image features without training them
        self.detach_image = kind == "iql"

    def forward(self, obs: torch.Tensor, goal: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """Mean action, normalized: [B, A]."""
        return torch.tanh(self.net(self.features(obs, goal, image, self.detach_image)))

    def log_prob(self, mean: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log N(actions; mean, diag exp(2 log_std)) summed over action dimensions: [B]."""
        log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        return torch.distributions.Normal(mean, log_std.exp()).log_prob(actions).sum(-1)

    def nll(self, obs, goal, actions, image=None) -> torch.Tensor:
        """Per-sample loss [B]: -log pi(a|s) (Gaussian) or squared error summed over dims."""
        mean = self(obs, goal, image)
        if self.gaussian:
            return -self.log_prob(mean, actions)
        return ((mean - actions) ** 2).sum(-1)


class Iql(nn.Module):
    """IQL learner: twin Q, V, target critics and the actor.

    Args:
        cfg: settings (``IqlConfig``).
        obs_dim, action_dim, goal_dim: S, A, G.
        camera: the camera feature key when ``cfg.encoder == "image"``.
        image_shape: (H, W, 3) of that camera.

    Attributes:
        metrics: floats of the last ``loss`` call (losses, mean V, Q, advantage, weight).
    """

    def __init__(self, cfg: IqlConfig, obs_dim: int, action_dim: int, goal_dim: int,
                 camera: str | None = None, image_shape: tuple[int, ...] | None = None):
        super().__init__()
        check_expectile_td(cfg.expectile, cfg.tau, cfg.discount)
        self.cfg = cfg
        image = cfg.encoder == "image"
        if image and camera is None:
            raise ValueError("encoder=image needs a camera")
        encoder = ImageEncoder(cfg.channels, 64) if image else None
        self.features = Features(obs_dim, goal_dim, encoder, cfg.state_dims)
        d = self.features.dim
        self.q1 = mlp(d + action_dim, cfg.hidden, 1)
        self.q2 = mlp(d + action_dim, cfg.hidden, 1)
        self.v = mlp(d, cfg.hidden, 1)
        self.actor = IqlActor(self.features, action_dim, cfg.hidden, cfg.actor == "gaussian", "iql",
                              (camera,) if image else (), image_shape if image else None)
        self.target = nn.ModuleDict({"features": copy.deepcopy(self.features),
                                     "q1": copy.deepcopy(self.q1), "q2": copy.deepcopy(self.q2)})
        self.target.requires_grad_(False)
        self.metrics: dict[str, float] = {}

    def _online_params(self):
        return [*self.features.parameters(), *self.q1.parameters(), *self.q2.parameters()]

    def q(self, features: torch.Tensor, actions: torch.Tensor, target: bool = False) -> torch.Tensor:
        """min(Q1, Q2) [B] of features [B, D] and actions [B, A] (online or target critics)."""
        q1, q2 = (self.target["q1"], self.target["q2"]) if target else (self.q1, self.q2)
        x = torch.cat([features, actions], -1)
        return torch.minimum(q1(x), q2(x)).squeeze(-1)

    def loss(self, obs, actions, reward, next_obs, done, goal, image=None, next_image=None) -> torch.Tensor:
        """Sum of the value, critic and actor losses for a batch of transitions.

        Args:
            obs, next_obs: [B, 1, S] normalized states. actions: [B, A] normalized.
            reward: [B] (after normalization). done: [B] 1.0 where the transition is terminal.
            goal: [B, G]. image, next_image: uint8 [B, H, W, 3] for an image encoder.
        """
        cfg = self.cfg
        f = self.features(obs, goal, image)
        with torch.no_grad():
            q_target = self.q(self.target["features"](obs, goal, image), actions, target=True)
            v_next = self.v(self.features(next_obs, goal, next_image)).squeeze(-1)
            td_target = reward + cfg.discount * (1.0 - done) * v_next
        v = self.v(f).squeeze(-1)
        value_loss = expectile_loss(q_target - v, cfg.expectile)
        x = torch.cat([f, actions], -1)
        q1, q2 = self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)
        critic_loss = ((q1 - td_target) ** 2 + (q2 - td_target) ** 2).mean()
        advantage = (q_target - v).detach()
        weight = torch.exp(cfg.beta * advantage).clamp(max=cfg.max_weight)
        actor_loss = (weight * self.actor.nll(obs, goal, actions, image)).mean()
        self.metrics = {
            "value_loss": float(value_loss.detach()), "critic_loss": float(critic_loss.detach()),
            "actor_loss": float(actor_loss.detach()), "v": float(v.detach().mean()),
            "q": float(q_target.mean()), "advantage": float(advantage.mean()),
            "weight": float(weight.mean()),
        }
        return value_loss + critic_loss + actor_loss

    @torch.no_grad()
    def after_step(self) -> None:
        """Polyak update of the target critics: target <- (1 - tau) target + tau online."""
        target = [*self.target["features"].parameters(), *self.target["q1"].parameters(),
                  *self.target["q2"].parameters()]
        torch._foreach_lerp_(target, self._online_params(), self.cfg.tau)

