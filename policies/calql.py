"""Cal-QL: conservative Q-learning whose pushed-down Q-values are calibrated by the data's returns.

Nakamoto, Zhai, Singh, Sobol Mark, Ma, Finn, Kumar, Levine, "Cal-QL: Calibrated Offline RL
Pre-Training for Efficient Online Fine-Tuning", NeurIPS 2023. Facts implemented (Sec. 4-5):

* CQL (Kumar et al., 2020) on top of SAC (:class:`tether.policies.sac.Sac`): for every critic
  Q_i, alpha (E_{a~mu}[Q_i(s, a)] - Q_i(s, a_data)), with the pushed-down term estimated by an
  importance-sampled log-sum-exp over n uniform actions (density 0.5^A on [-1, 1]^A), n actions
  of pi(.|s) and n of pi(.|s') (each term minus its log-density; CQL(H)), at temperature T.
* Calibration: the Q-values of the policy's actions, Q_i(s, a~pi), are replaced by
  max(Q_i(s, a~pi), V_mu(s)) before the log-sum-exp, V_mu(s) the Monte-Carlo discounted
  return-to-go of the data from s (:func:`mc_returns`). So CQL never pushes Q below the value of
  the behaviour policy, and online fine-tuning starts from a calibrated scale.
* Logged: the fraction of Q_i(s, a~pi) under the bound (``metrics["below_bound"]``), how often
  the calibration acts.

Inputs: as SAC, plus ``mc_return`` [B] (same reward normalization as ``reward``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tether.policies.configs import CalQlConfig
from tether.policies.sac import Sac


def mc_returns(reward: np.ndarray, done: np.ndarray, next_row: np.ndarray, discount: float,
               tail: str = "repeat") -> np.ndarray:
    """Monte-Carlo discounted return-to-go G_t of every frame, per episode.

    G_t = r_t + gamma (1 - d_t) G_{t+1} along ``next_row`` (offline.py's transitions: a frame
    whose ``next_row`` is itself is its episode's last). A terminal last frame has G = r; a
    truncated one (not terminal: the episode was cut by the time limit, its reward is that of a
    step with no recorded successor) has G = r / (1 - gamma) with ``tail="repeat"`` (the reward
    continued forever: Cal-QL's choice for unfinished sparse-reward episodes) or G = r with
    ``"zero"`` (nothing after the cut).

    Args:
        reward: [N] rewards (after the learner's normalization). done: [N] 1 where terminal.
        next_row: [N] int row of s_{t+1}; rows of an episode are consecutive and increasing.
        discount: gamma in [0, 1).

    Returns:
        float32 [N].

    Raises:
        ValueError: mismatched lengths, a ``next_row`` that does not point forward to the next row
            or to itself, gamma outside [0, 1), or an unknown ``tail``.
    """
    reward = np.asarray(reward, np.float64)
    done = np.asarray(done).astype(bool)
    next_row = np.asarray(next_row, np.int64)
    n = len(reward)
    if len(done) != n or len(next_row) != n:
        raise ValueError(f"reward, done, next_row must have one length, got {n}, {len(done)}, {len(next_row)}")
    if not 0 <= discount < 1:
        raise ValueError(f"discount must be in [0, 1), got {discount}")
    if tail not in ("repeat", "zero"):
        raise ValueError(f"tail is 'repeat' or 'zero', got {tail!r}")
    rows = np.arange(n)
    if n and not np.all((next_row == rows) | (next_row == rows + 1)):
        raise ValueError("next_row must point to the next row (or to itself at an episode's end)")
    out = np.empty(n, np.float64)
    following = 0.0
    for t in range(n - 1, -1, -1):
        if next_row[t] == t:  # an episode's last frame
            if done[t] or tail == "zero":
                out[t] = reward[t]
            else:
                out[t] = reward[t] / (1.0 - discount)
        else:
            out[t] = reward[t] + discount * (0.0 if done[t] else following)
        following = out[t]
    return out.astype(np.float32)


def pushed_down(q_rand: torch.Tensor, action_dim: int, q_pi: torch.Tensor, logp_pi: torch.Tensor, q_next: torch.Tensor,
                logp_next: torch.Tensor, bound: torch.Tensor | None, temperature: float = 1.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """CQL's pushed-down value per critic and state, with Cal-QL's lower bound.

    T logsumexp over the 3n values {Q(s, a_unif) - log 0.5^A, max(Q(s, a_pi), b) - log pi(a_pi|s),
    max(Q(s, a'_pi), b) - log pi(a'_pi|s')} / T, where a_pi ~ pi(.|s), a'_pi ~ pi(.|s') (both
    evaluated at s) and b = ``bound`` (no clipping when None: plain CQL).

    Args:
        q_rand, q_pi, q_next: [E, n, B] Q-values of n uniform / pi(.|s) / pi(.|s') actions
            (q_rand as it is: the uniform log-density log 0.5^A is subtracted here).
        logp_pi, logp_next: [n, B] their log-densities. bound: [B] Monte-Carlo returns, or None.

    Returns:
        (pushed [E, B], q_pi after clipping [E, n, B]).
    """
    if bound is not None:
        q_pi, q_next = torch.maximum(q_pi, bound), torch.maximum(q_next, bound)
    cat = torch.cat([q_rand - action_dim * math.log(0.5), q_pi - logp_pi, q_next - logp_next], 1)
    return temperature * torch.logsumexp(cat / temperature, 1), q_pi


class CalQl(Sac):
    """Cal-QL learner: SAC (``cfg.sac``) plus the calibrated CQL regularizer.

    Args:
        cfg: ``CalQlConfig``. obs_dim, action_dim, goal_dim: S, A, G.

    Raises:
        ValueError: as ``Sac``, or ``actions`` < 1, ``alpha`` < 0, ``temperature`` <= 0.

    Attributes:
        metrics: SAC's plus ``cql_loss``, ``q_data``, ``q_pi``, ``mc_return`` and ``below_bound``
            (share of Q(s, a~pi) under the Monte-Carlo return, over critics, states and draws).
    """

    def __init__(self, cfg: CalQlConfig, obs_dim: int, action_dim: int, goal_dim: int):
        if cfg.actions < 1 or cfg.alpha < 0 or cfg.temperature <= 0:
            raise ValueError(f"need actions >= 1, alpha >= 0, temperature > 0; got {cfg.actions}, "
                             f"{cfg.alpha}, {cfg.temperature}")
        super().__init__(cfg.sac, obs_dim, action_dim, goal_dim, kind="calql")
        self.calql = cfg

    def _q_many(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q of n actions per state: features [B, D], actions [n, B, A] -> [E, n, B]."""
        n, b = actions.shape[:2]
        q = self.critics(features.repeat(n, 1), actions.reshape(n * b, -1))
        return q.reshape(q.shape[0], n, b)

    def cql_term(self, obs, next_obs, goal, features, q_data, mc_return) -> torch.Tensor:
        """alpha * sum over critics of mean_B (T logsumexp(Q(s, a_k)/T) - Q(s, a_data)).

        q_data: [E, B]; mc_return: [B]. Policy actions are sampled without gradient (the CQL term
        trains the critics only).
        """
        cfg = self.calql
        n, b, a = cfg.actions, q_data.shape[1], self.action_dim
        with torch.no_grad():
            random_actions = (torch.rand(n, b, a) * 2 - 1).to(q_data)
            pi_actions, pi_logp = self.actor.sample(obs, goal, n)
            next_actions, next_logp = self.actor.sample(next_obs, goal, n)
        q_pi, q_next = self._q_many(features, pi_actions), self._q_many(features, next_actions)
        # how often the bound binds: the calibration's whole effect (Cal-QL, Fig. 4)
        below = float(torch.cat([q_pi, q_next], 1).detach().lt(mc_return).float().mean())
        pushed, q_pi = pushed_down(self._q_many(features, random_actions), a, q_pi, pi_logp, q_next, next_logp,
                                   mc_return if cfg.calibrated else None, cfg.temperature)
        gap = (pushed - q_data).mean(1).sum()
        self.metrics.update(cql_loss=float(gap.detach()), q_data=float(q_data.detach().mean()),
                            q_pi=float(q_pi.detach().mean()), mc_return=float(mc_return.mean()), below_bound=below)
        return cfg.alpha * gap

    def critic_regularizer(self, obs, next_obs, goal, features, q_data, mc_return=None, **extra) -> torch.Tensor:
        """The calibrated CQL term (see :meth:`cql_term`).

        Raises:
            ValueError: the batch has no ``mc_return`` column.
        """
        if mc_return is None:
            raise ValueError("Cal-QL needs an mc_return column in every batch (Monte-Carlo "
                             "return-to-go; tether.policies.calql.mc_returns)")
        return self.cql_term(obs, next_obs, goal, features, q_data, mc_return)
