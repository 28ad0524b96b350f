"""Goal-conditioned implicit Q-learning (GCIQL) on play data, as OGBench's reference implementation.

Park, Frans, Eysenbach, Levine, "OGBench: Benchmarking Offline Goal-Conditioned RL", ICLR 2025;
github.com/seohongpark/ogbench ``impls/agents/gciql.py`` and ``impls/utils/datasets.py``
(``GCDataset``). Facts implemented (settings in ``tether.policies.configs.GciqlConfig``):

* Goals by hindsight relabelling (``GCDataset.sample_goals``, :func:`sample_goals`): for each
  sampled transition t, a goal row that is t itself with p_cur, a later row of the same episode
  with p_traj (geometric offsets of mean 1 / (1 - gamma) for the value, uniform over the rest of
  the episode for the actor, capped at the episode's last frame), else any row of the dataset.
  Value goals 0.2 / 0.5 / 0.3 (geometric), actor goals 0 / 1 / 0 (uniform).
* Sparse goal reward: r = 0 and mask 0 when the goal row is the transition's own row, else
  r = -1, mask 1 (``gc_negative``): Q is minus the discounted steps to the goal, in [-100, 0].
* V(s, g) by expectile regression (tau 0.9) onto min(Q1', Q2')(s, a, g) of the target critics;
  twin critics by TD onto r + gamma mask V(s', g); targets by Polyak averaging (0.005).
* The actor, a Gaussian with constant unit std whose mean is an MLP of (s, g), by DDPG+BC
  (OGBench's default): L = -Q(s, g, clip(mu)) / stop_grad(mean |Q|) - alpha log pi(a | s, g), the
  critic frozen in it; or by AWR: -min(exp(alpha (Q - V)), 100) log pi(a | s, g). alpha = 1 in
  OGBench's cube-single-play and scene-play runs. The exported policy is clip(mu, -1, 1) (OGBench
  evaluates at temperature 0).
* Networks: MLPs of widths ``hidden`` (512 x 3) with GELU; LayerNorm in value and critics.

Differences from the reference: tether's training loop (AdamW with warm-up and cosine decay, EMA
weights for export, a gradient-norm clip: set ``--optim.weight-decay 0 --optim.grad-clip 1e9``
and ``--optim.warmup-steps 0`` to come closer to OGBench's plain Adam 3e-4), and observations
z-scored by the dataset's statistics (goals with the same statistics) inside the exported graph.

Shapes: ``obs``/``next_obs`` [B, 1, S] and goals [B, S] z-scored ``observation.state``;
``actions`` [B, A] scaled to [-1, 1] (``tether.policies.data.Normalizer``).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from tether.policies.configs import GciqlConfig, TrainConfig
from tether.policies.data import Normalizer
from tether.policies.iql import check_expectile_td, expectile_loss

MAX_AWR_WEIGHT = 100.0
"""Clip of the AWR weights (OGBench's ``jnp.minimum(exp_a, 100.0)``)."""
ACTOR_INIT_SCALE = 1e-2
"""Scale of the actor's last layer at initialization (OGBench's ``final_fc_init_scale``)."""


def check_ratios(cfg: GciqlConfig) -> None:
    """Check the goal mixtures and the TD settings of ``cfg``.

    Raises:
        ValueError: one line: a goal probability outside [0, 1] or a mixture not summing to 1,
            an expectile outside (0, 1), tau outside (0, 1], discount outside [0, 1), alpha < 0.
    """
    check_expectile_td(cfg.expectile, cfg.tau, cfg.discount)
    for who in ("value", "actor"):
        p = [getattr(cfg, f"{who}_p_{k}goal") for k in ("cur", "traj", "random")]
        if any(not 0 <= x <= 1 for x in p) or abs(sum(p) - 1) > 1e-6:
            raise ValueError(f"{who} goal probabilities (cur, traj, random) must be in [0, 1] and sum to 1, "
                             f"got {tuple(p)}")
    if cfg.alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {cfg.alpha}")


def sample_goals(idxs: np.ndarray, final: np.ndarray, n_rows: int, p_cur: float, p_traj: float,
                 geom: bool, discount: float, rng: np.random.Generator) -> np.ndarray:
    """Goal rows for transition rows ``idxs`` (OGBench's ``GCDataset.sample_goals``).

    Args:
        idxs: int [B] rows of the transitions.
        final: int [N] the last row of each row's episode.
        n_rows: N, rows random goals are drawn from.
        p_cur, p_traj: probabilities of the row itself and of a later row of its episode (the rest
            is random rows).
        geom: later rows at ``idxs + Geometric(1 - discount)`` (>= 1), else uniform between
            ``idxs + 1`` and the episode's last row; both capped at the last row.

    Returns:
        int64 [B] goal rows.
    """
    b = len(idxs)
    last = final[idxs]
    random_rows = rng.integers(0, n_rows, b)
    if geom:
        traj = np.minimum(idxs + rng.geometric(1 - discount, b), last)
    else:
        u = rng.random(b)
        traj = np.round(np.minimum(idxs + 1, last) * u + last * (1 - u)).astype(np.int64)
    goals = np.where(rng.random(b) < p_traj / (1.0 - p_cur + 1e-6), traj, random_rows)
    return np.where(rng.random(b) < p_cur, idxs, goals).astype(np.int64)


@dataclass
class GoalData:
    """The states and actions of a dataset's episodes, for goal-conditioned batches.

    Attributes:
        obs: float32 [N, S] ``observation.state``; actions: float32 [N, A]; final: int64 [N] last
        row of each row's episode; starts: int64 [M] rows with a next frame (transition starts).
    """

    obs: np.ndarray
    actions: np.ndarray
    final: np.ndarray
    starts: np.ndarray

    @classmethod
    def from_dataset(cls, ds) -> GoalData:
        """Read a ``tether.robot.dataset.Dataset``.

        Raises:
            ValueError: no episode has two frames (no transition to learn from).
        """
        f = ds.frames(["observation.state", "action"])
        lengths = np.array([e["length"] for e in ds.episodes], np.int64)
        if not (lengths >= 2).any():
            raise ValueError(f"{ds.root} has no episode of 2 frames or more: GCIQL needs transitions")
        final = np.repeat(np.cumsum(lengths) - 1, lengths)
        rows = np.arange(len(final))
        return cls(f["observation.state"].astype(np.float32), f["action"].astype(np.float32), final,
                   rows[rows < final])

    def batches(self, cfg: GciqlConfig, normalizer: Normalizer, batch_size: int, seed: int = 0
                ) -> Callable[[int], dict[str, torch.Tensor]]:
        """A ``sample_batch(step)`` for ``tether.policies.train.train``: ``obs``/``next_obs``
        [B,1,S], ``actions`` [B,A], ``value_goal``/``actor_goal`` [B,S], ``reward``/``mask`` [B]."""
        from tether.policies.train import batch_rng

        obs = normalizer.obs(self.obs).astype(np.float32)
        actions = normalizer.action(self.actions).astype(np.float32)
        n = len(obs)

        def sample_batch(step: int) -> dict[str, torch.Tensor]:
            rng = batch_rng(seed, step)
            idxs = self.starts[rng.integers(0, len(self.starts), batch_size)]
            vg = sample_goals(idxs, self.final, n, cfg.value_p_curgoal, cfg.value_p_trajgoal,
                              cfg.value_geom_sample, cfg.discount, rng)
            ag = sample_goals(idxs, self.final, n, cfg.actor_p_curgoal, cfg.actor_p_trajgoal,
                              cfg.actor_geom_sample, cfg.discount, rng)
            success = (idxs == vg).astype(np.float32)
            t = torch.from_numpy
            return {"obs": t(obs[idxs, None]), "next_obs": t(obs[idxs + 1, None]), "actions": t(actions[idxs]),
                    "value_goal": t(obs[vg]), "actor_goal": t(obs[ag]), "reward": t(success - 1.0),
                    "mask": t(1.0 - success)}

        return sample_batch


def gc_mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, layer_norm: bool) -> nn.Sequential:
    """Linear (+ LayerNorm) + GELU per hidden width, then a linear layer (OGBench's ``MLP``)."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), *([nn.LayerNorm(h)] if layer_norm else []), nn.GELU()]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class GciqlActor(nn.Module):
    """The goal-conditioned policy: obs [B, T, S] (last frame) and goal [B, S] -> clip(mu) [B, A].

    What ONNX export runs (``tether.policies.export.MlpGraph``, goal input normalized there).

    Attributes:
        kind: "gciql" (``tether.policy`` metadata). window: 1. image_keys: ().
    """

    window = 1
    kind = "gciql"
    image_keys: tuple[str, ...] = ()

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.net = gc_mlp(2 * obs_dim, hidden, action_dim, layer_norm=False)
        with torch.no_grad():
            self.net[-1].weight.mul_(ACTOR_INIT_SCALE)
            self.net[-1].bias.zero_()

    def mean(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The Gaussian's mean, unclipped: [B, A]."""
        return self.net(torch.cat([obs[:, -1], goal], -1))

    def forward(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The deterministic action, normalized: clip(mu, -1, 1) [B, A]."""
        return self.mean(obs, goal).clamp(-1.0, 1.0)


def unit_gaussian_log_prob(mean: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log N(actions; mean, I) summed over action dimensions: [B] (the constant-std actor's)."""
    d = actions.shape[-1]
    return -0.5 * ((actions - mean) ** 2).sum(-1) - 0.5 * d * float(np.log(2 * np.pi))


class Gciql(nn.Module):
    """GCIQL learner: V(s, g), twin Q(s, a, g), target critics, the actor.

    Args:
        cfg: settings (``GciqlConfig``). obs_dim: S (goals have S too). action_dim: A.

    Attributes:
        metrics: floats of the last ``loss`` call.

    Raises:
        ValueError: bad settings (:func:`check_ratios`).
    """

    def __init__(self, cfg: GciqlConfig, obs_dim: int, action_dim: int):
        super().__init__()
        check_ratios(cfg)
        self.cfg = cfg
        self.value = gc_mlp(2 * obs_dim, cfg.hidden, 1, cfg.layer_norm)
        self.q1 = gc_mlp(2 * obs_dim + action_dim, cfg.hidden, 1, cfg.layer_norm)
        self.q2 = gc_mlp(2 * obs_dim + action_dim, cfg.hidden, 1, cfg.layer_norm)
        self.target = nn.ModuleDict({"q1": copy.deepcopy(self.q1), "q2": copy.deepcopy(self.q2)})
        self.target.requires_grad_(False)
        self.actor = GciqlActor(obs_dim, action_dim, cfg.hidden)
        self.metrics: dict[str, float] = {}

    def v(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """V(s, g): obs [B, 1, S], goal [B, S] -> [B]."""
        return self.value(torch.cat([obs[:, -1], goal], -1)).squeeze(-1)

    def q(self, obs: torch.Tensor, goal: torch.Tensor, actions: torch.Tensor, target: bool = False,
          frozen: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q1, Q2) [B] each; ``target``: the Polyak copies; ``frozen``: the online critics with
        detached weights (the actor's gradient reaches the action, not the critics)."""
        x = torch.cat([obs[:, -1], goal, actions], -1)
        nets = (self.target["q1"], self.target["q2"]) if target else (self.q1, self.q2)
        if frozen:
            return tuple(torch.func.functional_call(net, {k: p.detach() for k, p in net.named_parameters()}, (x,))
                         .squeeze(-1) for net in nets)
        return tuple(net(x).squeeze(-1) for net in nets)

    def loss(self, obs, next_obs, actions, value_goal, actor_goal, reward, mask) -> torch.Tensor:
        """Value + critic + actor loss of a batch (shapes in the module docstring; reward, mask [B]).

        Raises:
            ValueError: one line when the batch's shapes disagree.
        """
        b, s = obs.shape[0], obs.shape[-1]
        if value_goal.shape != (b, s) or actor_goal.shape != (b, s) or reward.shape != (b,) or mask.shape != (b,):
            raise ValueError(f"GCIQL batch shapes disagree: obs {tuple(obs.shape)}, goals "
                             f"{tuple(value_goal.shape)} / {tuple(actor_goal.shape)}, reward {tuple(reward.shape)}, "
                             f"mask {tuple(mask.shape)} (want [B,1,S], [B,S], [B])")
        cfg = self.cfg
        with torch.no_grad():
            q_target = torch.minimum(*self.q(obs, value_goal, actions, target=True))
            td = reward + cfg.discount * mask * self.v(next_obs, value_goal)
        v = self.v(obs, value_goal)
        value_loss = expectile_loss(q_target - v, cfg.expectile)
        q1, q2 = self.q(obs, value_goal, actions)
        critic_loss = ((q1 - td) ** 2 + (q2 - td) ** 2).mean()
        mean = self.actor.mean(obs, actor_goal)
        log_prob = unit_gaussian_log_prob(mean, actions)
        if cfg.actor_loss == "ddpgbc":
            q_pi = torch.minimum(*self.q(obs, actor_goal, mean.clamp(-1, 1), frozen=True))
            q_loss = -q_pi.mean() / (q_pi.abs().mean().detach() + 1e-6)
            actor_loss = q_loss - cfg.alpha * log_prob.mean()
            extra = {"q_pi": float(q_pi.detach().mean())}
        else:
            with torch.no_grad():
                adv = torch.minimum(*self.q(obs, actor_goal, actions)) - self.v(obs, actor_goal)
                weight = torch.exp(cfg.alpha * adv).clamp(max=MAX_AWR_WEIGHT)
            actor_loss = -(weight * log_prob).mean()
            extra = {"advantage": float(adv.mean()), "weight": float(weight.mean())}
        self.metrics = {"value_loss": float(value_loss.detach()), "critic_loss": float(critic_loss.detach()),
                        "actor_loss": float(actor_loss.detach()), "v": float(v.detach().mean()),
                        "q": float(q_target.mean()), "mse": float(((mean.detach() - actions) ** 2).mean()), **extra}
        return value_loss + critic_loss + actor_loss

    @torch.no_grad()
    def after_step(self) -> None:
        """Polyak update of the target critics: target <- (1 - tau) target + tau online."""
        torch._foreach_lerp_(list(self.target.parameters()), [*self.q1.parameters(), *self.q2.parameters()],
                             self.cfg.tau)


class GciqlCritic(nn.Module):
    """min(Q1, Q2)(s, g, a) of a trained learner: obs [B, 1, S], goal [B, S], actions [B, A]
    (normalized) -> [B]; what ``export_gciql_critic`` exports."""

    kind = "gciql_critic"

    def __init__(self, learner: Gciql):
        super().__init__()
        self.q1, self.q2 = learner.q1, learner.q2

    def forward(self, obs: torch.Tensor, goal: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs[:, -1], goal, actions], -1)
        return torch.minimum(self.q1(x), self.q2(x)).squeeze(-1)


def gciql_config(d: dict) -> GciqlConfig:
    """``GciqlConfig`` from its ``asdict`` form (a checkpoint's)."""
    return GciqlConfig(**{**d, "hidden": tuple(d["hidden"])})


def save_gciql(path: Path, learner: Gciql, normalizer: Normalizer, tasks: list[str], spec) -> Path:
    """Write the learner (pass the EMA weights), its settings, normalizer, tasks and spec, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"kind": "gciql", "config": asdict(learner.cfg),
               "dims": {"obs_dim": int(normalizer.obs_mean.shape[0]), "action_dim": int(normalizer.action_center.shape[0])},
               "normalizer": normalizer.to_dict(), "tasks": list(tasks), "spec": spec.to_dict(),
               "state_dict": learner.state_dict()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_gciql(path: Path | str):
    """Inverse of :func:`save_gciql`: (learner in eval mode, normalizer, tasks, spec).

    Raises:
        ValueError: not a GCIQL checkpoint.
    """
    from tether.robot.spec import RobotSpec

    payload = torch.load(Path(path), weights_only=False, map_location="cpu")
    if not isinstance(payload, dict) or payload.get("kind") != "gciql":
        raise ValueError(f"{path} is not a tether GCIQL checkpoint")
    dims = payload["dims"]
    learner = Gciql(gciql_config(payload["config"]), dims["obs_dim"], dims["action_dim"])
    learner.load_state_dict(payload["state_dict"])
    return (learner.eval(), Normalizer.from_dict(payload["normalizer"]), payload["tasks"],
            RobotSpec.from_dict(payload["spec"]))


def export_gciql(actor: GciqlActor, normalizer: Normalizer, spec, tasks: list[str], path: Path,
                 tolerance: float = 1e-4) -> tuple[Path, float]:
    """``policy.onnx`` of the actor, conditioned on the robot's ``observation.goal`` (every element
    of the state), parity-checked against torch. Returns (path, max |onnx - torch|).

    Raises:
        ValueError: parity above ``tolerance``.
    """
    from tether.policies.export import export_policy, parity

    dims = tuple(range(normalizer.obs_mean.shape[0]))
    out = export_policy(actor.eval(), normalizer, spec, tasks, path, goal_dims=dims)
    diff = parity(actor, normalizer, spec, out, len(tasks), goal_dims=dims)
    if diff > tolerance:
        raise ValueError(f"ONNX and torch differ by {diff:.2e} > {tolerance:.0e}")
    return out, diff


def export_gciql_critic(learner: Gciql, normalizer: Normalizer, spec, tasks: list[str], path: Path,
                        tolerance: float = 1e-4, n: int = 32) -> tuple[Path, float]:
    """``critic.onnx``: min(Q1, Q2)(s, g, a) with the normalization inside (``CriticGraph``):
    inputs ``obs`` [B, 1, S] (the raw state), ``goal`` [B, S] (the raw ``observation.goal``),
    ``action`` [B, A] in robot units; output ``q`` [B] (minus the discounted steps to the goal).
    Metadata: ``tether.spec`` as the actor's, ``tether.critic`` (kind, goal, normalization,
    parameters). ``tether.robot.critic.CriticRunner`` runs it: value-guided BESO sampling
    (``PolicyRunner(..., critic=...)``). Returns (path, max |onnx - torch| on ``n`` random inputs).

    Raises:
        ValueError: parity above ``tolerance``.
    """
    import onnxruntime as ort

    from tether.policies.export import CriticGraph, goal_metadata, onnx_program, save_onnx
    from tether.robot.spec import RobotSpec

    s, a = normalizer.obs_mean.shape[0], normalizer.action_center.shape[0]
    dims = tuple(range(s))
    critic = GciqlCritic(learner).eval()
    graph = CriticGraph(critic, normalizer, spec, dims).eval()
    example = (torch.zeros(1, 1, s), torch.zeros(1, s), torch.zeros(1, a))
    proto = onnx_program(graph, example, ["obs", "goal", "action"], ["q"])
    state = spec.observation["observation.state"]
    critic_spec = RobotSpec(spec.robot_type, spec.control_rate_hz,
                            {"observation.state": state, "observation.goal": state}, spec.action, tasks=tuple(tasks))
    meta = {"kind": critic.kind, "window": 1, "goal": goal_metadata(tasks, dims),
            "normalization": normalizer.to_dict(), "parameters": sum(p.numel() for p in critic.parameters())}
    path = save_onnx(proto, {"tether.spec": critic_spec.to_json(), "tether.critic": json.dumps(meta)}, Path(path))
    rng = np.random.default_rng(0)
    feed = {"obs": normalizer.obs_mean + normalizer.obs_std * rng.standard_normal((n, 1, s)),
            "goal": normalizer.obs_mean + normalizer.obs_std * rng.standard_normal((n, s)),
            "action": normalizer.action_center + normalizer.action_half_range * rng.uniform(-1, 1, (n, a))}
    feed = {k: v.astype(np.float32) for k, v in feed.items()}
    (onnx_q,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)
    with torch.no_grad():
        torch_q = graph(*(torch.from_numpy(v) for v in feed.values())).numpy()
    diff = float(np.abs(onnx_q - torch_q).max())
    if diff > tolerance:
        raise ValueError(f"critic ONNX and torch differ by {diff:.2e} > {tolerance:.0e}")
    return path, diff


def train_gciql(dataset: Path | str, cfg: GciqlConfig, optim: TrainConfig, out: Path,
                on_step: Callable[[int, float], None] | None = None, resume: bool = False) -> dict:
    """Train GCIQL on ``dataset`` (play data: ``observation.state`` and ``action``) and write
    ``out/``: ``policy.pt``, ``policy.onnx`` (goal input = the robot's ``observation.goal``),
    ``critic.onnx`` (``export_gciql_critic``: for value-guided sampling of another policy),
    ``checkpoints/`` (``last.pt`` to resume; ``policy_<step>.onnx`` at every checkpoint, for a
    learning curve by ``tether eval``), ``learning_curve.png``, ``metrics.json``, ``report.json``.

    Returns the report (dict).

    Raises:
        tether.robot.dataset.DatasetError: unreadable dataset. ValueError: no robot spec, bad
        settings, no transitions, or an ONNX parity above 1e-4.
    """
    from tether.policies.train import train
    from tether.robot.dataset import Dataset

    check_ratios(cfg)
    ds = Dataset(dataset)
    if ds.spec is None:
        raise ValueError(f"{dataset} carries no tether robot spec in meta/info.json")
    data = GoalData.from_dataset(ds)
    normalizer = Normalizer.fit(data.obs, data.actions)
    torch.manual_seed(optim.seed)
    learner = Gciql(cfg, data.obs.shape[1], data.actions.shape[1])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = list(ds.tasks)
    metrics: list[dict] = []

    def step_hook(step: int, loss: float) -> None:
        if step % 100 == 0 or step == optim.steps - 1:
            metrics.append({"step": step, **learner.metrics})
        if on_step is not None:
            on_step(step, loss)

    def at_checkpoint(step: int, ema: nn.Module) -> None:
        export_gciql(ema.actor, normalizer, ds.spec, tasks, out / "checkpoints" / f"policy_{step}.onnx")

    t0 = time.perf_counter()
    result = train(learner, data.batches(cfg, normalizer, optim.batch_size, optim.seed), optim, out,
                   on_step=step_hook, resume=resume, on_checkpoint=at_checkpoint)
    save_gciql(out / "policy.pt", result.ema, normalizer, tasks, ds.spec)
    onnx_path, diff = export_gciql(result.ema.actor, normalizer, ds.spec, tasks, out / "policy.onnx")
    _, critic_diff = export_gciql_critic(result.ema, normalizer, ds.spec, tasks, out / "critic.onnx")
    report = {"algo": "gciql", "dataset": str(dataset), "transitions": int(len(data.starts)),
              "episodes": len(ds.episodes), "steps": optim.steps, "seconds": round(time.perf_counter() - t0, 2),
              "final_loss": result.losses[-1] if result.losses else None, "parity": diff, "critic_parity": critic_diff,
              "config": asdict(cfg), "last_metrics": metrics[-1] if metrics else {}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
