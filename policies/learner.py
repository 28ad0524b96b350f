"""The fine-tuning learner: the torch half of online RL (``tether finetune learner``).

It binds the actor-learner link (``tether.robot.learner_link``: one ROUTER, actors connect), puts
the actors' transitions into a replay buffer, trains at the configured update-to-data ratio, and
every ``publish_every`` updates exports the exploration policy to ONNX and sends it, as a new
weights version, to every actor it knows.

Algorithms (``OnlineConfig.algo``), all from a Cal-QL checkpoint (``tether train --algo calql``):

* ``wsrl`` (Zhou et al., ICLR 2025): the first ``warmup_steps`` transitions come from the frozen
  pre-trained policy (weights version 1, no update); then SAC on online data only, UTD 4; the
  offline data is not kept.
* ``rlpd`` (Ball et al., ICML 2023): SAC with every batch half offline (the dataset, plus
  intervention demos), half online.
* ``calql`` (Nakamoto et al., 2023): the Cal-QL objective continued online with the same mixed
  batches; online transitions get their Monte-Carlo return-to-go once their episode ends.

Rewards are what the actor sends: the robot's own (``sim``), or a success classifier's or a
VLM's computed on the robot side (``tether.perception.success_rewards``); pre-train on the same kind of
reward (``tether success-classifier --relabel``). They are normalized as in pre-training (the
checkpoint's reward statistics), plus ``intervention_penalty`` where a human took over (RLIF, Luo
et al., 2023).
Terminals follow the checkpoint's setting (``success``: an episode that ends in success).

Faults: a restarted learner (same ``out``) resumes its networks, optimizer, counters, weights
version and replay buffer from ``out/learner.pt`` and ``out/buffer.npz`` (written at every
publication); a restarted actor says hello and gets the current weights, the buffer untouched.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import zmq

from tether.policies.calql import CalQl, mc_returns
from tether.policies.configs import OnlineConfig
from tether.policies.export import export_policy
from tether.policies.offline import Transitions, load_offline_policy, normalize_rewards
from tether.policies.replay import MixedSampler, ReplayBuffer
from tether.policies.sac import ExplorationPolicy, Sac
from tether.robot import learner_link
from tether.robot.dataset import Dataset

log = logging.getLogger(__name__)

REWARDS = ("sim", "classifier", "vlm")
"""Reward sources: the robot's own, a success classifier's, a VLM's (the actor computes them)."""


class CheckpointKindError(ValueError):
    """The checkpoint is not one online fine-tuning starts from."""


@dataclass
class Progress:
    """One line of ``progress.jsonl``: where fine-tuning stands.

    success, return, intervention_rate: over the last 10 training episodes (NaN before the first).
    eval_success: over the last 10 evaluation episodes (the mean action; the actor's
    ``eval_every``), NaN without any.
    utd: gradient updates per online transition after the warm-up.
    """

    t: float
    phase: str
    episodes: int
    transitions: int
    updates: int
    version: int
    success: float
    ret: float
    intervention_rate: float
    utd: float
    actors: int
    eval_success: float = float("nan")
    metrics: dict = field(default_factory=dict)


class Learner:
    """Online fine-tuning learner.

    Args:
        checkpoint: a Cal-QL ``policy.pt``.
        cfg: ``OnlineConfig``.
        address: where to bind the link (``tcp://HOST:PORT`` or ``ipc://PATH``).
        out: output folder (weights, state, buffer, progress, curves).
        dataset: the offline dataset, for ``rlpd`` and ``calql`` (their offline half).
        reward: reward source; ``sim`` only for now.
        resume: continue from ``out/learner.pt`` if it exists.

    Raises:
        CheckpointKindError: not a Cal-QL checkpoint.
        ValueError: ``rlpd``/``calql`` without a dataset, an unknown reward source, or a dataset
            whose spec differs from the checkpoint's.
    """

    def __init__(self, checkpoint: Path | str, cfg: OnlineConfig, address: str, out: Path | str,
                 dataset: Path | str | None = None, reward: str = "sim", resume: bool = True):
        if reward not in REWARDS:
            raise ValueError(f"unknown reward source {reward!r}; tether has {REWARDS}")
        if cfg.algo in ("rlpd", "calql") and dataset is None and cfg.offline_ratio > 0:
            raise ValueError(f"--algo {cfg.algo} samples {cfg.offline_ratio:.0%} of each batch from the "
                             "offline data: pass --dataset (or --online.offline-ratio 0)")
        payload = torch.load(Path(checkpoint), weights_only=False, map_location="cpu")
        if not isinstance(payload, dict) or payload.get("kind") != "calql":
            raise CheckpointKindError(f"{checkpoint} is not a Cal-QL checkpoint (kind "
                                      f"{payload.get('kind') if isinstance(payload, dict) else None!r}); "
                                      "pre-train with tether train --algo calql")
        pretrained, self.normalizer, self.tasks, self.spec = load_offline_policy(checkpoint)
        self.cfg, self.address, self.out = cfg, address, Path(out)
        self.data_cfg = pretrained_data_cfg(payload)
        self.reward_info = payload.get("reward") or {"normalization": "none", "shift": 0.0}
        sac_cfg = pretrained.cfg if cfg.utd is None else replace(pretrained.cfg, utd=cfg.utd)
        self.utd = sac_cfg.utd
        dims = payload["dims"]
        if cfg.algo == "calql":
            self.model: Sac = CalQl(replace(pretrained.calql, sac=sac_cfg), dims["obs_dim"], dims["action_dim"],
                                    dims["goal_dim"])
        else:
            self.model = Sac(sac_cfg, dims["obs_dim"], dims["action_dim"], dims["goal_dim"], kind="sac")
        self.model.load_state_dict(pretrained.state_dict())
        self.model.train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        s, a = dims["obs_dim"], dims["action_dim"]
        self.online = ReplayBuffer(cfg.capacity, s, a)
        ratio = 0.0 if cfg.algo == "wsrl" else cfg.offline_ratio  # WSRL retains no offline data
        self.offline = self._offline_buffer(dataset) if ratio > 0 else None
        self.sampler = MixedSampler(self.online, self.offline, ratio, cfg.seed)
        self.session = secrets.randbits(62)
        self.version, self.updates, self.received = 0, 0, 0
        self.episodes: list[dict] = []
        self.curve: list[dict] = []
        self._actors: dict[bytes, dict] = {}
        self._open_episodes: dict[tuple[int, int], list[int]] = {}  # (actor session, episode) -> rows
        self._weights: bytes = b""
        self._since_publish = 0
        self._last_progress = 0.0
        self._on_progress: Callable[[Progress], None] | None = None
        torch.manual_seed(cfg.seed)
        if resume and (self.out / "learner.pt").exists():
            self._load()

    # ----------------------------------------------------------------------------- data
    def _offline_buffer(self, dataset) -> ReplayBuffer:
        ds = Dataset(dataset)
        data = Transitions.from_dataset(ds, self.data_cfg)
        if data.obs.shape[1] != self.normalizer.obs_mean.shape[0] or data.actions.shape[1] != self.spec.action.shape[0]:
            raise ValueError(f"{dataset} has states of {data.obs.shape[1]} and actions of {data.actions.shape[1]} "
                             f"values; the checkpoint's have {self.normalizer.obs_mean.shape[0]} and "
                             f"{self.spec.action.shape[0]}")
        rows, nxt = data.starts, data.next_row[data.starts]
        buf = ReplayBuffer(max(1, len(rows) + self.cfg.capacity // 10), data.obs.shape[1], data.actions.shape[1])
        mc = mc_returns(data.reward, data.done, data.next_row, self.model.cfg.discount,
                        getattr(getattr(self.model, "calql", None), "mc_tail", "repeat"))
        tasks = np.array([self.tasks.index(t) if t in self.tasks else 0 for t in data.tasks])
        buf.add(self.normalizer.obs(data.obs[rows]), self.normalizer.action(data.actions[rows]), data.reward[rows],
                self.normalizer.obs(data.obs[nxt]), data.done[rows].astype(bool), task=tasks[data.task_index[rows]],
                version=-1, mc_return=mc[rows])
        return buf

    def normalize_reward(self, raw: np.ndarray) -> np.ndarray:
        """The robot's reward as pre-training saw its dataset's (``offline.normalize_rewards``
        with the dataset's statistics)."""
        return normalize_rewards(raw, self.reward_info)

    def add_transitions(self, msg: dict) -> None:
        """Store one ``transitions`` message (normalized) and book its episode's end."""
        k = len(msg["obs"])
        task = msg["task"]
        if task is not None and task not in self.tasks:
            log.warning("dropped %d transitions of task %r: the policy knows %s", k, task, self.tasks)
            return
        key = (msg["session"], msg["episode"])
        if k:
            intervention = np.asarray(msg["intervention"], bool)
            reward = self.normalize_reward(msg["reward"]) + self.cfg.intervention_penalty * intervention
            done = np.asarray(msg["terminal"], bool) if self.data_cfg.terminal == "success" else np.zeros(k, bool)
            columns = dict(obs=self.normalizer.obs(np.asarray(msg["obs"])),
                           action=self.normalizer.action(np.asarray(msg["action"])), reward=reward,
                           next_obs=self.normalizer.obs(np.asarray(msg["next_obs"])), done=done,
                           task=self.tasks.index(task) if task is not None else 0,
                           version=np.asarray(msg["version"], np.int64), intervention=intervention)
            rows = self.online.add(**columns)
            self._open_episodes.setdefault(key, []).extend(rows.tolist())
            if self.offline is not None and self.cfg.intervention_demos and intervention.any():
                self.offline.add(**{n: (v[intervention] if np.ndim(v) else v) for n, v in columns.items()})
            self.received += k
        end = msg["episode_end"]
        if end is not None:
            rows = np.asarray(self._open_episodes.pop(key, []), np.int64)
            if len(rows) and isinstance(self.model, CalQl):
                nxt = np.minimum(np.arange(len(rows)) + 1, len(rows) - 1)
                self.online.mc_return[rows] = mc_returns(self.online.reward[rows], self.online.done[rows], nxt,
                                                         self.model.cfg.discount, self.model.calql.mc_tail)
            self.episodes.append({**end, "actor": msg["actor"], "updates": self.updates, "transitions": self.received,
                                  "t": time.time()})

    # ------------------------------------------------------------------------------ training
    def allowed_updates(self) -> int:
        """Updates owed under the UTD ratio: utd x (online transitions after the warm-up) minus
        updates done; 0 during the warm-up or with nothing to sample."""
        if self.received < self.cfg.warmup_steps or len(self.online) == 0:
            return 0
        return max(0, self.utd * (self.received - self.cfg.warmup_steps) - self.updates)

    def batch(self) -> dict[str, torch.Tensor]:
        b = self.sampler.sample(self.cfg.batch_size)
        goal = torch.eye(len(self.tasks))[torch.from_numpy(b["task"])]
        return {"obs": torch.from_numpy(b["obs"])[:, None], "actions": torch.from_numpy(b["action"]),
                "reward": torch.from_numpy(b["reward"]), "next_obs": torch.from_numpy(b["next_obs"])[:, None],
                "done": torch.from_numpy(b["done"].astype(np.float32)), "goal": goal,
                "mc_return": torch.from_numpy(b["mc_return"])}

    def update(self) -> float:
        """One gradient step (critics, actor every ``actor_every``, temperature; Polyak targets)."""
        loss = self.model.loss(**self.batch())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at update {self.updates}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.model.after_step()
        self.updates += 1
        self._since_publish += 1
        return float(loss.detach())

    # ------------------------------------------------------------------------------ weights
    def export(self) -> bytes:
        """ONNX bytes of the current exploration policy (samples with the runner's noise)."""
        self.version += 1
        path = self.out / "weights" / f"v{self.version}.onnx"
        was_training = self.model.training
        export_policy(ExplorationPolicy(self.model.actor), self.normalizer, self.spec, self.tasks, path)
        self.model.train(was_training)
        return path.read_bytes()

    def publish(self, socket: zmq.Socket) -> None:
        """Export a new version, save the learner's state, and send the weights to every actor."""
        self._weights = self.export()
        self._since_publish = 0
        self.save()
        for identity in list(self._actors):
            self._send_weights(socket, identity)
        log.info("published weights v%d after %d updates", self.version, self.updates)

    def _send_weights(self, socket: zmq.Socket, identity: bytes) -> None:
        frame = learner_link.encode("weights", self.version, session=self.session, version=self.version,
                                    onnx=self._weights, updates=self.updates)
        try:
            socket.send_multipart([identity, frame], zmq.NOBLOCK)
        except zmq.Again:
            log.warning("actor %r is not reading: weights v%d not sent", self._actors[identity].get("actor"),
                        self.version)

    def _handle(self, socket: zmq.Socket, identity: bytes, frame: bytes) -> None:
        try:
            msg = learner_link.decode(frame)
        except learner_link.LinkError as e:
            log.warning("dropped a bad message: %s", e)
            return
        if msg["type"] == "actor_hello":
            self._actors[identity] = {"actor": msg["actor"], "seen": time.monotonic()}
            if msg["learner"] != self.session or msg["version"] != self.version:
                self._send_weights(socket, identity)
        elif msg["type"] == "transitions":
            self._actors.setdefault(identity, {"actor": msg["actor"]})["seen"] = time.monotonic()
            self.add_transitions(msg)
            if msg["episode_end"] is not None:
                self._report(self._on_progress)

    # ------------------------------------------------------------------------------ the loop
    def progress(self) -> Progress:
        last = [e for e in self.episodes if not e.get("eval")][-10:]
        evals = [e["success"] for e in self.episodes if e.get("eval")][-10:]
        steps = sum(e["length"] for e in last)
        nan = float("nan")
        return Progress(
            t=time.time(), phase="warm-up" if self.received < self.cfg.warmup_steps else "training",
            episodes=len(self.episodes), transitions=self.received, updates=self.updates, version=self.version,
            success=float(np.mean([e["success"] for e in last])) if last else nan,
            ret=float(np.mean([e["return"] for e in last])) if last else nan,
            intervention_rate=sum(e["interventions"] for e in last) / steps if steps else nan,
            utd=self.updates / max(1, self.received - self.cfg.warmup_steps), actors=len(self._actors),
            eval_success=float(np.mean(evals)) if evals else nan,
            metrics={k: round(v, 4) for k, v in self.model.metrics.items()})

    def run(self, stop=None, max_updates: int | None = None, duration_s: float | None = None,
            on_progress: Callable[[Progress], None] | None = None) -> Progress:
        """Serve actors and train until ``stop`` is set, ``max_updates`` or ``duration_s``.

        Writes ``out/`` as it goes: ``weights/vN.onnx``, ``learner.pt``, ``buffer.npz``,
        ``progress.jsonl`` (a :class:`Progress` a second and at every episode's end), ``episodes.json``, ``finetune.png``,
        and at the end ``policy.onnx`` (the mean action, for ``tether eval``).
        """
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(asdict(self.cfg), indent=2))
        socket = zmq.Context.instance().socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, learner_link.MAX_LINK_BYTES)
        socket.setsockopt(zmq.SNDHWM, 8)
        socket.bind(self.address)
        end = None if duration_s is None else time.monotonic() + duration_s
        self._on_progress = on_progress
        try:
            self.publish(socket)  # the pre-trained (or resumed) policy: WSRL's frozen warm-up policy
            while not (stop is not None and stop.is_set()) and (end is None or time.monotonic() < end) \
                    and (max_updates is None or self.updates < max_updates):
                owed, handled = self.allowed_updates(), 0
                while handled < 100 and socket.poll(0 if owed else 50):  # bounded: updates are not starved
                    self._handle(socket, *socket.recv_multipart()[:2])
                    owed, handled = self.allowed_updates(), handled + 1
                for _ in range(min(owed, 8)):  # a few at a time: the actors' messages stay fresh
                    self.update()
                if self._since_publish >= self.cfg.publish_every:
                    self.publish(socket)
                if time.monotonic() - self._last_progress > 1.0:
                    self._report(on_progress)
            while socket.poll(300):  # stopped: take what the actors sent before they left
                self._handle(socket, *socket.recv_multipart()[:2])
        finally:
            self._report(on_progress)
            self.save()
            self.finish()
            socket.close()
        return self.progress()

    def _report(self, on_progress) -> None:
        self._last_progress = time.monotonic()
        p = self.progress()
        self.curve.append(asdict(p))
        with open(self.out / "progress.jsonl", "a") as f:
            f.write(json.dumps(asdict(p)) + "\n")
        if on_progress is not None:
            on_progress(p)

    # ------------------------------------------------------------------------------ state
    def save(self) -> None:
        """``learner.pt`` (networks, optimizer, counters, version) and ``buffer.npz``, atomically."""
        state = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "version": self.version,
                 "updates": self.updates, "received": self.received, "episodes": self.episodes,
                 "algo": self.cfg.algo}
        tmp = self.out / "learner.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.out / "learner.pt")
        self.online.save(self.out / "buffer.npz")

    def _load(self) -> None:
        state = torch.load(self.out / "learner.pt", weights_only=False, map_location="cpu")
        if state.get("algo") != self.cfg.algo:
            raise ValueError(f"{self.out} holds a {state.get('algo')} run; use another --out for {self.cfg.algo}")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.version, self.updates, self.received = state["version"], state["updates"], state["received"]
        self.episodes = state["episodes"]
        if (self.out / "buffer.npz").exists():
            self.online = ReplayBuffer.load(self.out / "buffer.npz", self.cfg.capacity)
            self.sampler.online = self.online
        log.info("resumed at weights v%d, %d updates, %d transitions", self.version, self.updates, self.received)

    def finish(self) -> None:
        """``policy.onnx`` (mean action), ``episodes.json`` and ``finetune.png``."""
        self.model.eval()
        export_policy(self.model.actor, self.normalizer, self.spec, self.tasks, self.out / "policy.onnx")
        self.model.train()
        (self.out / "episodes.json").write_text(json.dumps(self.episodes))
        plot_curves(self.episodes, self.curve, self.out / "finetune.png")


def pretrained_data_cfg(payload: dict):
    """The ``IqlConfig`` (reward column, normalization, terminals) the checkpoint was trained on."""
    from tether.policies.offline import iql_config

    return iql_config(payload["config"])


def plot_curves(episodes: list[dict], curve: list[dict], path: Path) -> None:
    """Success, return and intervention rate per training episode (moving averages over up to 10),
    the evaluation episodes' success, and the weights version the actors ran, to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), dpi=110)
    evals = [(k + 1, float(e["success"])) for k, e in enumerate(episodes) if e.get("eval")]
    episodes = [e for e in episodes if not e.get("eval")]
    x = np.arange(1, len(episodes) + 1)

    def smooth(values):
        values = np.asarray(values, float)
        k = max(1, min(10, len(values) // 3))  # short runs still get a curve
        return np.convolve(values, np.ones(k) / k, mode="valid") if len(values) else values

    for ax, key, label in ((axes[0], "success", "success rate"), (axes[1], "return", "return")):
        values = [float(e[key]) for e in episodes]
        ax.plot(x, values, ".", alpha=0.3)
        s = smooth(values)
        ax.plot(x[len(x) - len(s):], s)
        ax.set_xlabel("episode")
        ax.set_ylabel(label)
    if evals:  # each at the count of training episodes before it
        ex, ey = np.array(evals).T
        axes[0].plot(ex - np.arange(1, len(ex) + 1), ey, "o-", markersize=3, label="evaluation (mean action)")
        axes[0].legend(fontsize=7)
    rate = [e["interventions"] / max(1, e["length"]) for e in episodes]
    axes[2].plot(x[len(x) - len(smooth(rate)):], smooth(rate), label="intervention rate")
    axes[2].set_xlabel("episode")
    axes[2].set_ylabel("intervention rate")
    if curve:
        twin = axes[2].twinx()
        twin.step([c["episodes"] for c in curve], [c["version"] for c in curve], color="gray", where="post")
        twin.set_ylabel("weights version")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
