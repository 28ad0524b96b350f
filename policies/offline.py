"""Offline RL data and runs: transitions from a dataset with a chosen reward column, IQL or BC on
them, the checkpoint, and the ONNX export (``tether train --algo iql|bc|calql``).

Transitions (s_t, a_t, r_t, s_{t+1}, d_t) come from consecutive frames of an episode: row t's
``observation.state`` and ``action``, its reward (``next.reward`` is the reward of the step taken
from frame t; a relabelled ``reward.<name>`` is the learned score of frame t, see
``tether.policies.relabel``; ``constant`` is 0), and the next frame's state. Terminals
(``IqlConfig.terminal``): with ``success``, a row whose ``next.success`` is true is terminal
(d = 1, no bootstrap; tether's MetaWorld driver ends the episode there); an episode's last frame
that is not terminal ended by the time limit (truncation): it has no next frame, so it is not the
start of a transition, but it is the next state of the one before, which bootstraps from it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch

from tether.policies.configs import CalQlConfig, IqlConfig, TrainConfig
from tether.policies.data import Normalizer
from tether.robot.dataset import Dataset, DatasetError, VideoCache
from tether.robot.spec import RobotSpec

REWARD_STD_MIN = 1e-6
OFFLINE_KINDS = ("iql", "bc", "calql")


class RewardColumnError(DatasetError):
    """The reward or terminal column asked for is not in the dataset."""


@dataclass
class Transitions:
    """Every transition of a dataset, as arrays over its frames (rows in episode order).

    Attributes:
        obs: float32 [N, S]; actions: float32 [N, A]; task_index: int64 [N]; tasks: by index.
        reward: float32 [N] after normalization (``reward_info`` says how).
        done: float32 [N] 1 where terminal. next_row: int64 [N] row of s_{t+1}.
        starts: int64 [M] rows that start a transition (all but non-terminal last frames).
        camera: the camera key of an image run, else None.
    """

    obs: np.ndarray
    actions: np.ndarray
    task_index: np.ndarray
    tasks: list[str]
    reward: np.ndarray
    done: np.ndarray
    next_row: np.ndarray
    starts: np.ndarray
    reward_info: dict
    camera: str | None = None

    @classmethod
    def from_dataset(cls, ds: Dataset, cfg: IqlConfig) -> Transitions:
        """Read the transitions ``cfg`` asks for (reward column, terminals, camera).

        Raises:
            RewardColumnError: ``cfg.reward`` is neither ``constant`` nor a dataset column (the
                message lists the reward columns there are), or ``terminal=success`` without a
                ``next.success`` column.
            DatasetError: an unknown camera, or no camera for ``encoder=image``.
        """
        rewards = [k for k in ds.features if k == "next.reward" or k.startswith("reward.")]
        if cfg.reward != "constant" and cfg.reward not in ds.features:
            raise RewardColumnError(
                f"{ds.root} has no reward column {cfg.reward!r}; it has {rewards or 'none'} "
                "(relabel with tether reward-model --relabel, or use constant)")
        if cfg.terminal == "success" and "next.success" not in ds.features:
            raise RewardColumnError(f"{ds.root} has no next.success column for terminal=success; "
                                    "use --iql.terminal none")
        columns = ["observation.state", "action", "task_index"]
        columns += [c for c in (cfg.reward, "next.success") if c in ds.features]
        f = ds.frames(list(dict.fromkeys(columns)))
        n = len(f["action"])
        rows = np.arange(n)
        lengths = np.array([e["length"] for e in ds.episodes], np.int64)
        last = np.repeat(np.cumsum(lengths) - 1, lengths)
        if cfg.terminal == "success":
            done = f["next.success"].reshape(-1).astype(bool)
        else:
            done = np.zeros(n, bool)
        is_last = rows == last
        starts = rows[~is_last | done]
        next_row = np.minimum(rows + 1, last)
        if cfg.reward == "constant":
            reward = np.zeros(n, np.float32)
            info = {"column": "constant", "normalization": "none", "shift": 0.0}
        else:
            raw = f[cfg.reward].reshape(-1).astype(np.float64)
            info = {"column": cfg.reward, "normalization": cfg.reward_normalization, "shift": cfg.reward_shift,
                    "raw_mean": float(raw[starts].mean()), "raw_std": float(raw[starts].std()),
                    "raw_max": float(raw[starts].max())}
            reward = normalize_rewards(raw, info)
        camera = None
        if cfg.encoder == "image":
            from tether.policies.reward_model import check_camera

            camera = check_camera(ds, cfg.camera)
        return cls(
            f["observation.state"].astype(np.float32), f["action"].astype(np.float32),
            f["task_index"].astype(np.int64), list(ds.tasks), reward, done.astype(np.float32),
            next_row, starts, info, camera,
        )

    def batches(self, ds: Dataset, normalizer: Normalizer, batch_size: int, seed: int = 0,
                cache: VideoCache | None = None, columns: dict[str, np.ndarray] | None = None,
                ) -> Callable[[int], dict[str, torch.Tensor]]:
        """A ``sample_batch(step)`` for ``tether.policies.train.train``: uniform transitions as
        ``obs``/``next_obs`` [B,1,S], ``actions`` [B,A], ``reward``/``done`` [B], ``goal`` [B,G]
        (task one-hot), for an image run ``image``/``next_image`` uint8 [B,H,W,3], and each of
        ``columns`` (name -> float array [N] over frames, e.g. Cal-QL's ``mc_return``) as [B]."""
        obs = torch.from_numpy(normalizer.obs(self.obs).astype(np.float32))
        actions = torch.from_numpy(normalizer.action(self.actions).astype(np.float32))
        goals = torch.eye(len(self.tasks))[torch.from_numpy(self.task_index)]
        reward, done = torch.from_numpy(self.reward), torch.from_numpy(self.done)
        starts, next_row = torch.from_numpy(self.starts), torch.from_numpy(self.next_row)
        frames = None
        if self.camera is not None:
            from tether.policies.sampling import TrainingDataset

            frames = TrainingDataset(ds, keys=[self.camera], cache=cache)
        from tether.policies.train import batch_rng

        extra = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in (columns or {}).items()}

        def sample_batch(step: int) -> dict[str, torch.Tensor]:
            rows = starts[torch.from_numpy(batch_rng(seed, step).integers(0, len(starts), batch_size))]
            nxt = next_row[rows]
            batch = {"obs": obs[rows, None], "next_obs": obs[nxt, None], "actions": actions[rows],
                     "reward": reward[rows], "done": done[rows], "goal": goals[rows],
                     **{k: v[rows] for k, v in extra.items()}}
            if frames is not None:
                both = frames.get(torch.cat([rows, nxt]).numpy(), None)[self.camera]
                batch["image"] = torch.from_numpy(both[:batch_size])
                batch["next_image"] = torch.from_numpy(both[batch_size:])
            return batch

        return sample_batch


def normalize_rewards(raw: np.ndarray, info: dict) -> np.ndarray:
    """Rewards as training sees them: ``info["normalization"]`` (``below_max``: (r - max) / std,
    ``standardize``: (r - mean) / std, ``none``) with the dataset's statistics in ``info``, then
    ``info["shift"]`` added; float32. Online fine-tuning applies the same to the robot's rewards."""
    r = np.asarray(raw, np.float64)
    std = info.get("raw_std", 1.0)
    std = std if std > REWARD_STD_MIN else 1.0
    if info.get("normalization") == "standardize":
        r = (r - info.get("raw_mean", 0.0)) / std
    elif info.get("normalization") == "below_max":
        r = (r - info.get("raw_max", 0.0)) / std
    return (r + info.get("shift", 0.0)).astype(np.float32)


def build_learner(algo: Literal["iql", "bc", "calql"], cfg: IqlConfig, obs_dim: int, action_dim: int, goal_dim: int,
                  camera: str | None = None, image_shape: tuple[int, ...] | None = None,
                  calql: CalQlConfig | None = None) -> torch.nn.Module:
    """An ``Iql`` or ``BehaviourCloning`` learner with ``cfg``'s networks, or ``CalQl`` with
    ``calql``'s (default ``CalQlConfig()``).

    Raises:
        ValueError: Cal-QL with an image encoder (it reads states only, for now).
    """
    from tether.policies.bc import BehaviourCloning
    from tether.policies.iql import Iql

    if algo == "calql":
        from tether.policies.calql import CalQl

        if camera is not None:
            raise ValueError("calql reads observation.state only; use --iql.encoder state")
        if cfg.state_dims is not None:
            raise ValueError("calql reads the whole observation.state; --iql.state-dims is for iql and bc")
        return CalQl(calql or CalQlConfig(), obs_dim, action_dim, goal_dim)

    cls = Iql if algo == "iql" else BehaviourCloning
    return cls(cfg, obs_dim, action_dim, goal_dim, camera, image_shape)


def save_offline_policy(path: Path, algo: str, learner: torch.nn.Module, cfg: IqlConfig, dims: dict,
                        normalizer: Normalizer, tasks: list[str], spec: RobotSpec,
                        calql: CalQlConfig | None = None, reward_info: dict | None = None) -> Path:
    """Write the learner (pass the EMA weights) with what rebuilds it (atomically); Cal-QL adds
    its settings and the reward normalization (``Transitions.reward_info``), which online
    fine-tuning applies to the robot's rewards."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"kind": algo, "config": asdict(cfg), "dims": dims, "normalizer": normalizer.to_dict(),
               "tasks": list(tasks), "spec": spec.to_dict(), "state_dict": learner.state_dict()}
    if calql is not None:
        payload.update(calql=asdict(calql), reward=reward_info)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_offline_policy(path: Path | str):
    """Inverse of :func:`save_offline_policy`: (learner in eval mode, normalizer, tasks, spec).

    Raises:
        ValueError: not an IQL, BC or Cal-QL checkpoint.
    """
    payload = torch.load(Path(path), weights_only=False, map_location="cpu")
    if not isinstance(payload, dict) or payload.get("kind") not in OFFLINE_KINDS:
        raise ValueError(f"{path} is not a tether IQL/BC/Cal-QL checkpoint")
    cfg = iql_config(payload["config"])
    dims = payload["dims"]
    learner = build_learner(payload["kind"], cfg, dims["obs_dim"], dims["action_dim"], dims["goal_dim"],
                            dims.get("camera"), tuple(dims["image_shape"]) if dims.get("image_shape") else None,
                            calql_config(payload["calql"]) if "calql" in payload else None)
    learner.load_state_dict(payload["state_dict"])
    return (learner.eval(), Normalizer.from_dict(payload["normalizer"]), payload["tasks"],
            RobotSpec.from_dict(payload["spec"]))


def iql_config(d: dict) -> IqlConfig:
    """``IqlConfig`` from its ``asdict`` form (a checkpoint's; older ones lack ``state_dims``)."""
    dims = d.get("state_dims")
    return IqlConfig(**{**d, "hidden": tuple(d["hidden"]), "channels": tuple(d["channels"]),
                        "state_dims": None if dims is None else tuple(dims)})


def calql_config(d: dict) -> CalQlConfig:
    """``CalQlConfig`` from its ``asdict`` form (a checkpoint's)."""
    from tether.policies.configs import SacConfig

    sac = {**d["sac"], "hidden": tuple(d["sac"]["hidden"])}
    return CalQlConfig(**{**d, "sac": SacConfig(**sac)})


@dataclass
class OfflineRun:
    """What :func:`train_offline` returns."""

    checkpoint: Path
    onnx: Path
    parity: float
    result: object
    transitions: int
    report: dict


def train_offline(
    dataset: Path | str, algo: Literal["iql", "bc", "calql"], cfg: IqlConfig, optim: TrainConfig, out: Path,
    on_step: Callable[[int, float], None] | None = None, resume: bool = False,
    cache_dir: Path | None = None, tolerance: float = 1e-5, calql: CalQlConfig | None = None,
) -> OfflineRun:
    """Train IQL, BC or Cal-QL on ``dataset`` and write ``out/``: ``policy.pt``, ``policy.onnx``
    (with normalization, action limits and the robot spec inside; torch/onnxruntime parity
    checked), ``learning_curve.png``, ``train_history.json``, ``report.json``. Cal-QL (settings
    ``calql``, data settings ``cfg``: reward column, normalization, terminals) adds each frame's
    Monte-Carlo return-to-go of the normalized reward to its batches.

    Raises:
        DatasetError: unreadable dataset; RewardColumnError: see :class:`Transitions`.
        ValueError: no robot spec in the dataset, or the parity check fails.
    """
    from tether.policies.export import export_policy, parity
    from tether.policies.train import train

    ds = Dataset(dataset)
    if ds.spec is None:
        raise ValueError(f"{dataset} carries no tether robot spec in meta/info.json")
    if algo == "bc":  # the state-action pairs IQL learns from, whatever reward columns exist
        cfg = replace(cfg, reward="constant", terminal="success" if "next.success" in ds.features else "none")
    data = Transitions.from_dataset(ds, cfg)
    normalizer = Normalizer.fit(data.obs, data.actions)
    image_shape = tuple(ds.spec.observation[data.camera].shape) if data.camera else None
    dims = {"obs_dim": data.obs.shape[1], "action_dim": data.actions.shape[1], "goal_dim": len(data.tasks),
            "camera": data.camera, "image_shape": list(image_shape) if image_shape else None}
    torch.manual_seed(optim.seed)
    calql = (calql or CalQlConfig()) if algo == "calql" else None
    learner = build_learner(algo, cfg, dims["obs_dim"], dims["action_dim"], dims["goal_dim"], data.camera, image_shape,
                            calql)
    columns = None
    if calql is not None:
        from tether.policies.calql import mc_returns

        columns = {"mc_return": mc_returns(data.reward, data.done, data.next_row, calql.sac.discount, calql.mc_tail)}
    if cfg.encoder_init is not None:  # V-PTR: start from an encoder pre-trained on video
        from tether.policies.pretrained_encoder import init_image_encoders

        init_image_encoders(learner, cfg.encoder_init, image_shape, cfg.freeze_encoder)
    cache = VideoCache(ds, cache_dir=cache_dir) if data.camera else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics: list[dict] = []

    def step_hook(step: int, loss: float) -> None:
        if step % 10 == 0 or step == optim.steps - 1:
            metrics.append({"step": step, **learner.metrics})
        if on_step is not None:
            on_step(step, loss)

    t0 = time.perf_counter()
    result = train(learner, data.batches(ds, normalizer, optim.batch_size, optim.seed, cache, columns), optim, out,
                   on_step=step_hook, resume=resume)
    ckpt = save_offline_policy(out / "policy.pt", algo, result.ema, cfg, dims, normalizer, data.tasks, ds.spec,
                               calql, data.reward_info)
    actor = result.ema.actor.eval()
    onnx_path = export_policy(actor, normalizer, ds.spec, data.tasks, out / "policy.onnx")
    diff = parity(actor, normalizer, ds.spec, onnx_path, len(data.tasks))
    if diff > tolerance:
        raise ValueError(f"ONNX and torch differ by {diff:.2e} > {tolerance:.0e}")
    report = {"algo": algo, "dataset": str(dataset), "transitions": int(len(data.starts)),
              "terminals": int(data.done[data.starts].sum()), "reward": data.reward_info,
              "camera": data.camera, "steps": optim.steps, "seconds": round(time.perf_counter() - t0, 2),
              "final_loss": result.losses[-1] if result.losses else None, "parity": diff,
              "last_metrics": metrics[-1] if metrics else {}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return OfflineRun(ckpt, onnx_path, diff, result, len(data.starts), report)
