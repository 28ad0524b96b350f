"""A Bradley-Terry reward model fit on preference labels of frame pairs (RL-VLM-F).

Facts implemented (Wang et al., "RL-VLM-F: Reinforcement Learning from Vision Language Foundation
Model Feedback", ICML 2024, Sec. 4, which follows PEBBLE, Lee et al. 2021, and Christiano et al.
2017): a reward r(o) of one observation; the probability that the second of a pair is preferred is
the Bradley-Terry model

    P(o_2 > o_1) = exp r(o_2) / (exp r(o_1) + exp r(o_2)) = sigmoid(r(o_2) - r(o_1)),

fit by cross-entropy to the labels; an ensemble of 3 members (each from its own initialization and
its own minibatches) whose mean is the reward. Labels -1 ("no difference"/unsure) are skipped, as
RL-VLM-F does, or used as a 0.5 target (``RewardModelConfig.unsure``).

Labels come from ``tether label`` (``DATASET/labels/<name>.parquet``: ``episode_first,
frame_first, episode_second, frame_second`` as episode_index and frame_index, ``label`` 0 = first
better, 1 = second better, -1 = unsure). A member scores ``observation.state`` (z-scored inside
the model, MLP) or a camera frame (uint8 [H, W, 3] converted inside, small CNN:
``tether.policies.networks.ImageEncoder``).

The fit holds out ``val_fraction`` of the labelled pairs and reports accuracy on them per member
and for the ensemble mean, and, when the dataset records ``next.reward``, the Spearman rank
correlation between the learned reward and it over every frame, and the held-out accuracy against
the order of the true reward (``val_accuracy_true``; noisy labels bound ``val_accuracy`` by their
own accuracy, ``val_label_accuracy_true``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tether.perception.labellers.oracle import oracle_labels
from tether.policies.configs import RewardModelConfig, TrainConfig
from tether.policies.networks import ImageEncoder, mlp
from tether.robot.dataset import Dataset, DatasetError, VideoCache

LABEL_COLUMNS = ("episode_first", "frame_first", "episode_second", "frame_second", "label")


class LabelFileError(DatasetError):
    """A label file that does not fit its dataset: missing columns, unknown episodes or frames,
    labels other than 0, 1, -1, or too few usable pairs."""


class RewardNet(nn.Module):
    """One member: an observation -> scalar reward.

    State input: obs [B, S] float, z-scored with the buffers ``mean``/``std``, then an MLP.
    Image input: uint8 [B, H, W, 3], CNN encoder, then an MLP head.
    """

    def __init__(self, cfg: RewardModelConfig, obs_dim: int | None = None):
        super().__init__()
        self.image = cfg.input == "image"
        if self.image:
            self.encoder = ImageEncoder(cfg.channels, 64)
            self.head = mlp(64, cfg.hidden, 1)
        else:
            if obs_dim is None:
                raise ValueError("a state reward model needs obs_dim")
            self.register_buffer("mean", torch.zeros(obs_dim))
            self.register_buffer("std", torch.ones(obs_dim))
            self.head = mlp(obs_dim, cfg.hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, ...] observations -> [B] rewards."""
        if self.image:
            return self.head(self.encoder(x)).squeeze(-1)
        return self.head((x.float() - self.mean) / self.std).squeeze(-1)


class BradleyTerryEnsemble(nn.Module):
    """``cfg.ensemble`` reward networks trained with the Bradley-Terry cross-entropy.

    Args:
        cfg: settings.
        obs_dim: S for state input.
    """

    def __init__(self, cfg: RewardModelConfig, obs_dim: int | None = None):
        super().__init__()
        if cfg.ensemble < 1:
            raise ValueError(f"ensemble must be >= 1, got {cfg.ensemble}")
        self.cfg = cfg
        self.obs_dim = obs_dim
        self.members = nn.ModuleList(RewardNet(cfg, obs_dim) for _ in range(cfg.ensemble))

    def set_normalization(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Observation statistics (S,) of the state input, copied into every member."""
        for m in self.members:
            m.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            m.std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Observations [B, ...] -> every member's reward [K, B]."""
        return torch.stack([m(x) for m in self.members])

    def reward(self, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's reward, the mean of its members: [B, ...] -> [B]."""
        return self(x).mean(0)

    def loss(self, first: torch.Tensor, second: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Bradley-Terry cross-entropy, averaged over members and pairs.

        Args:
            first, second: [K, B, ...] the pairs' observations, each member its own minibatch.
            target: [K, B] float, P(second preferred): 1, 0, or 0.5 for unsure.
        """
        losses = []
        for k, member in enumerate(self.members):
            b = first.shape[1]
            r = member(torch.cat([first[k], second[k]]))
            losses.append(F.binary_cross_entropy_with_logits(r[b:] - r[:b], target[k]))
        return torch.stack(losses).mean()


@dataclass
class PreferencePairs:
    """Labelled pairs with their observations held in memory.

    Attributes:
        inputs: [U, ...] the distinct observations the pairs refer to (states float32 [U, S] or
            frames uint8 [U, H, W, 3]).
        first, second: int64 [P] rows of ``inputs``.
        label: int8 [P]: 0 first better, 1 second better, -1 unsure.
        rows: int64 [U] the dataset row (frame index over all episodes) of each input.
    """

    inputs: np.ndarray
    first: np.ndarray
    second: np.ndarray
    label: np.ndarray
    rows: np.ndarray

    @classmethod
    def load(
        cls, ds: Dataset, labels: Path, input: str = "state", camera: str | None = None,
        cache: VideoCache | None = None,
    ) -> PreferencePairs:
        """Read a label parquet and look its frames up in ``ds``.

        Raises:
            FileNotFoundError: no label file.
            LabelFileError: see the class; every problem row is counted and the first few named.
            DatasetError: the dataset lacks ``observation.state`` or the camera.
        """
        import pyarrow.parquet as pq

        if not Path(labels).exists():
            raise FileNotFoundError(f"no label file {labels} (write one with tether label)")
        table = pq.read_table(labels)
        missing = [c for c in LABEL_COLUMNS if c not in table.column_names]
        if missing:
            raise LabelFileError(f"{labels} lacks columns {missing}; it has {table.column_names}")
        cols = {c: table.column(c).to_numpy().astype(np.int64) for c in LABEL_COLUMNS}
        bad_label = ~np.isin(cols["label"], [0, 1, -1])
        if bad_label.any():
            raise LabelFileError(f"{labels}: labels must be 0, 1 or -1; row {int(np.flatnonzero(bad_label)[0])} "
                                 f"has {int(cols['label'][bad_label][0])} ({int(bad_label.sum())} such rows)")
        position = {int(ep["episode_index"]): i for i, ep in enumerate(ds.episodes)}
        lengths = np.array([int(ep["length"]) for ep in ds.episodes], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        rows = []
        for side in ("first", "second"):
            ep, fr = cols[f"episode_{side}"], cols[f"frame_{side}"]
            pos = np.array([position.get(int(e), -1) for e in ep], np.int64)
            bad = (pos < 0) | (fr < 0) | (fr >= lengths[np.maximum(pos, 0)])
            if bad.any():
                i = np.flatnonzero(bad)
                examples = ", ".join(f"row {r}: episode {ep[r]} frame {fr[r]}" for r in i[:3])
                raise LabelFileError(
                    f"{labels}: {len(i)} {side} frames are not in {ds.root} "
                    f"({len(ds)} episodes; {examples}): were the labels made on another dataset?")
            rows.append(starts[pos] + fr)
        unique, inverse = np.unique(np.concatenate(rows), return_inverse=True)
        episode_of = np.searchsorted(starts, unique, side="right") - 1
        if input == "state":
            if "observation.state" not in ds.features:
                raise DatasetError(f"{ds.root} has no observation.state")
            parts = {}
            for e in np.unique(episode_of):
                parts[e] = ds.episode(int(e), ["observation.state"])["observation.state"]
            inputs = np.stack([parts[e][r - starts[e]] for e, r in zip(episode_of, unique)]).astype(np.float32)
        else:
            camera = check_camera(ds, camera)
            cache = cache or VideoCache(ds)
            inputs = np.concatenate([
                cache.frames(camera, int(e), unique[episode_of == e] - starts[e]) for e in np.unique(episode_of)
            ]) if len(unique) else np.zeros((0, 1, 1, 3), np.uint8)
        p = len(cols["label"])
        return cls(inputs, inverse[:p], inverse[p:], cols["label"].astype(np.int8), unique)


def check_camera(ds: Dataset, camera: str | None) -> str:
    """The camera to use: ``camera`` if the dataset has it, else its first video feature.

    Raises:
        DatasetError: no cameras, or an unknown one.
    """
    if not ds.video_keys:
        raise DatasetError(f"{ds.root} has no camera (video feature)")
    camera = camera or ds.video_keys[0]
    if camera not in ds.video_keys:
        raise DatasetError(f"no camera {camera!r} in {ds.root}; it has {', '.join(ds.video_keys)}")
    return camera


def split_pairs(label: np.ndarray, cfg: RewardModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle the usable pairs with ``cfg.seed`` and cut off ``cfg.val_fraction`` for validation.

    Returns:
        (train, val) int64 indices of pairs; unsure pairs are left out under ``unsure=skip``.

    Raises:
        LabelFileError: fewer than 2 usable pairs, or a fraction outside [0, 1).
    """
    if not 0 <= cfg.val_fraction < 1:
        raise LabelFileError(f"val_fraction must be in [0, 1), got {cfg.val_fraction}")
    usable = np.flatnonzero(label != -1) if cfg.unsure == "skip" else np.arange(len(label))
    if len(usable) < 2:
        raise LabelFileError(f"only {len(usable)} usable labelled pairs ({int((label == -1).sum())} unsure): "
                             "label more pairs")
    order = np.random.default_rng(cfg.seed).permutation(usable)
    n_val = min(len(order) - 1, int(round(cfg.val_fraction * len(order))))
    if cfg.val_fraction > 0:
        n_val = max(n_val, 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _target(label: np.ndarray) -> np.ndarray:
    return np.where(label == -1, 0.5, label).astype(np.float32)


@torch.no_grad()
def member_rewards(model: BradleyTerryEnsemble, inputs: np.ndarray, batch: int = 512) -> np.ndarray:
    """Every member's reward of ``inputs`` [N, ...]: float32 [K, N]."""
    model.eval()
    # np.array copies: memory-mapped frames are read-only, which torch tensors cannot wrap safely
    out = [model(torch.from_numpy(np.array(inputs[i:i + batch]))) for i in range(0, len(inputs), batch)]
    return torch.cat(out, 1).numpy() if out else np.zeros((len(model.members), 0), np.float32)


def pair_accuracy(rewards: np.ndarray, pairs: PreferencePairs, idx: np.ndarray) -> np.ndarray:
    """Share of pairs ``idx`` (labels 0/1 only) on which each row of ``rewards`` [K, U] agrees with
    the label (ties count as wrong): float [K]; NaN if there are none."""
    idx = idx[pairs.label[idx] != -1]
    if len(idx) == 0:
        return np.full(len(rewards), np.nan)
    pred = rewards[:, pairs.second[idx]] > rewards[:, pairs.first[idx]]
    strict = rewards[:, pairs.second[idx]] != rewards[:, pairs.first[idx]]
    return ((pred == (pairs.label[idx] == 1)) & strict).mean(1)


def score_dataset(
    model: BradleyTerryEnsemble, ds: Dataset, camera: str | None = None, cache: VideoCache | None = None,
    on_episode: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """The ensemble's reward of every frame: one float32 [length] array per episode (in
    ``ds.episodes`` order). Image models read ``camera`` through ``cache``."""
    out = []
    for i in range(len(ds)):
        if model.cfg.input == "image":
            cache = cache or VideoCache(ds)
            x = cache.array(check_camera(ds, camera), i)
        else:
            x = ds.episode(i, ["observation.state"])["observation.state"].astype(np.float32)
        out.append(member_rewards(model, x).mean(0))
        if on_episode is not None:
            on_episode(i)
    return out


@dataclass
class RewardModelResult:
    """What :func:`fit_reward_model` returns: the model (EMA weights, eval mode) and its report."""

    model: BradleyTerryEnsemble
    report: dict
    pairs: PreferencePairs
    train_idx: np.ndarray
    val_idx: np.ndarray
    frame_rewards: list[np.ndarray] | None = None


def fit_reward_model(
    dataset: Dataset | Path | str,
    labels: Path | str,
    cfg: RewardModelConfig = RewardModelConfig(),
    out_dir: Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
    cache: VideoCache | None = None,
    correlate_with: str | None = "next.reward",
) -> RewardModelResult:
    """Fit a Bradley-Terry ensemble on the labels and evaluate it.

    Args:
        dataset: the dataset the labels were made on.
        labels: the label parquet.
        cfg: settings.
        out_dir: where ``tether.policies.train.train`` writes checkpoints and the learning curve;
            this function adds ``reward_model.pt``, ``report.json`` and ``report.png``.
        on_step: (step, loss) after each step.
        cache: decoded-video cache for image input.
        correlate_with: a per-frame true reward column for the Spearman correlation, or None.

    Returns:
        The model, the report (pairs, split, held-out accuracy per member and of the ensemble
        mean, Spearman rho against ``correlate_with`` when the dataset has it) and the data.

    Raises:
        LabelFileError, DatasetError, FileNotFoundError: see :meth:`PreferencePairs.load`.
    """
    from tether.policies.train import batch_rng, train

    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    camera = check_camera(ds, cfg.camera) if cfg.input == "image" else None
    if cfg.input == "image" and cache is None:
        cache = VideoCache(ds)
    pairs = PreferencePairs.load(ds, Path(labels), cfg.input, camera, cache)
    train_idx, val_idx = split_pairs(pairs.label, cfg)
    torch.manual_seed(cfg.seed)
    obs_dim = pairs.inputs.shape[1] if cfg.input == "state" else None
    model = BradleyTerryEnsemble(cfg, obs_dim)
    if cfg.input == "state":
        states = ds.frames(["observation.state"])["observation.state"].astype(np.float64)
        model.set_normalization(states.mean(0), np.maximum(states.std(0), 1e-2))
    inputs = torch.from_numpy(pairs.inputs)
    first, second = torch.from_numpy(pairs.first), torch.from_numpy(pairs.second)
    target = torch.from_numpy(_target(pairs.label))
    train_rows = torch.from_numpy(train_idx)

    def sample_batch(step: int) -> dict[str, torch.Tensor]:
        # each member its own minibatch: the ensemble's members disagree where data is thin
        draw = batch_rng(cfg.seed, step).integers(0, len(train_rows), (cfg.ensemble, cfg.batch_size))
        pick = train_rows[torch.from_numpy(draw)]
        return {"first": inputs[first[pick]], "second": inputs[second[pick]], "target": target[pick]}

    optim = TrainConfig(
        steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
        warmup_steps=min(100, max(1, cfg.steps // 10)), ema_decay=0.99, checkpoint_every=max(1, cfg.steps),
        seed=cfg.seed,
    )
    t0 = time.perf_counter()
    result = train(model, sample_batch, optim, out_dir, on_step=on_step)
    model = result.ema.eval()
    rewards = member_rewards(model, pairs.inputs)
    ensemble = rewards.mean(0, keepdims=True)
    report = {
        "labels": str(labels),
        "input": cfg.input,
        "camera": camera,
        "pairs": int(len(pairs.label)),
        "unsure": int((pairs.label == -1).sum()),
        "unsure_policy": cfg.unsure,
        "train_pairs": int(len(train_idx)),
        "val_pairs": int(len(val_idx)),
        "val_accuracy": _nan_to_none(float(pair_accuracy(ensemble, pairs, val_idx)[0])),
        "val_accuracy_members": [_nan_to_none(float(a)) for a in pair_accuracy(rewards, pairs, val_idx)],
        "train_accuracy": _nan_to_none(float(pair_accuracy(ensemble, pairs, train_idx)[0])),
        "final_loss": result.losses[-1] if result.losses else None,
        "steps": cfg.steps,
        "seconds": round(time.perf_counter() - t0, 2),
        "config": asdict(cfg),
    }
    frame_rewards = None
    if correlate_with and correlate_with in ds.features:
        from scipy.stats import spearmanr

        frame_rewards = score_dataset(model, ds, camera, cache)
        truth = ds.frames([correlate_with])[correlate_with].reshape(-1)
        rho = spearmanr(np.concatenate(frame_rewards), truth).statistic
        report["spearman"] = {"column": correlate_with, "rho": _nan_to_none(float(rho)),
                              "frames": int(len(truth))}
        # the labels may be noisy (a VLM's): how often the model orders held-out pairs as the
        # true reward does is the accuracy that matters downstream
        true_pairs = replace(pairs, label=oracle_labels(truth[pairs.rows[pairs.first]], truth[pairs.rows[pairs.second]]))
        report["val_accuracy_true"] = _nan_to_none(float(pair_accuracy(ensemble, true_pairs, val_idx)[0]))
        report["val_label_accuracy_true"] = _nan_to_none(_label_agreement(pairs, true_pairs, val_idx))
    out = RewardModelResult(model, report, pairs, train_idx, val_idx, frame_rewards)
    if out_dir is not None:
        out_dir = Path(out_dir)
        save_reward_model(out_dir / "reward_model.pt", model, ds, camera)
        (out_dir / "report.json").write_text(json.dumps(report, indent=2))
        plot_report(out, ds, out_dir / "report.png", correlate_with)
    return out


def _label_agreement(pairs: PreferencePairs, true_pairs: PreferencePairs, idx: np.ndarray) -> float:
    """Share of pairs ``idx`` labelled 0/1 in both sets on which the labels agree (NaN if none)."""
    both = idx[(pairs.label[idx] != -1) & (true_pairs.label[idx] != -1)]
    return float((pairs.label[both] == true_pairs.label[both]).mean()) if len(both) else float("nan")


def _nan_to_none(x: float) -> float | None:
    return None if x != x else round(x, 6)


def plot_report(result: RewardModelResult, ds: Dataset, path: Path, truth_key: str | None) -> None:
    """PNG: held-out accuracy per member and of the ensemble; learned vs true reward per frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = result.report
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    names = [f"member {k}" for k in range(len(r["val_accuracy_members"]))] + ["ensemble"]
    values = [a if a is not None else 0.0 for a in [*r["val_accuracy_members"], r["val_accuracy"]]]
    axes[0].bar(names, values, color=["#8aa"] * (len(names) - 1) + ["#246"])
    axes[0].set_ylim(0, 1)
    axes[0].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[0].set_ylabel(f"held-out accuracy ({r['val_pairs']} pairs)")
    if result.frame_rewards is not None and truth_key:
        truth = ds.frames([truth_key])[truth_key].reshape(-1)
        learned = np.concatenate(result.frame_rewards)
        axes[1].scatter(truth, learned, s=3, alpha=0.4)
        axes[1].set_xlabel(truth_key)
        axes[1].set_ylabel("learned reward (ensemble mean)")
        axes[1].set_title(f"Spearman rho = {r['spearman']['rho']}")
    else:
        axes[1].text(0.5, 0.5, "no true reward to compare", ha="center", va="center")
        axes[1].set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_reward_model(path: Path, model: BradleyTerryEnsemble, ds: Dataset, camera: str | None) -> Path:
    """Write the ensemble with its settings (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"kind": "bt_reward_model", "config": asdict(model.cfg), "obs_dim": model.obs_dim,
               "camera": camera, "dataset": str(ds.root), "state_dict": model.state_dict()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_reward_model(path: Path | str) -> tuple[BradleyTerryEnsemble, str | None]:
    """Inverse of :func:`save_reward_model`: (model in eval mode, camera or None).

    Raises:
        ValueError: not a tether reward model file.
    """
    payload = torch.load(Path(path), weights_only=False, map_location="cpu")
    if not isinstance(payload, dict) or payload.get("kind") != "bt_reward_model":
        raise ValueError(f"{path} is not a tether reward model")
    cfg = payload["config"]
    cfg = RewardModelConfig(**{**cfg, "hidden": tuple(cfg["hidden"]), "channels": tuple(cfg["channels"])})
    model = BradleyTerryEnsemble(cfg, payload["obs_dim"])
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload["camera"]
