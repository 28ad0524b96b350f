"""Saving and loading a trained goal-conditioned policy (BESO, GCBC) with everything needed to
rebuild and export it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from tether.policies.beso import Beso
from tether.policies.configs import BesoConfig, ObservationConfig
from tether.policies.data import Normalizer
from tether.policies.gcbc import Gcbc
from tether.policies.visuomotor import VisuomotorPolicy
from tether.robot.spec import RobotSpec

KINDS: dict[str, type[nn.Module]] = {"beso": Beso, "gcbc": Gcbc}


@dataclass
class TrainedPolicy:
    """A policy checkpoint: the model (eval mode), its normalizer, the task strings of its
    training data, the robot spec, and ``goal_dims`` (None: task one-hot goals; else the
    ``observation.state`` elements an observation goal specifies)."""

    model: nn.Module
    normalizer: Normalizer
    tasks: list[str]
    spec: RobotSpec
    goal_dims: tuple[int, ...] | None = None


def save_policy(
    path: Path, model: Beso | Gcbc | VisuomotorPolicy, normalizer: Normalizer, tasks: list[str], spec: RobotSpec,
    goal_dims: tuple[int, ...] | None = None,
) -> Path:
    """Write ``model`` (pass the EMA weights) with its normalizer, tasks, robot spec and goal
    encoding, atomically. A visuomotor policy also keeps what it reads (``ObservationConfig``,
    its cameras and their frame shapes, the goal camera)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = model.net
    dims = {
        "obs_dim": net.obs_emb.in_features,
        "action_dim": net.action_emb.in_features,
        "goal_dim": net.goal_emb.in_features,
    }
    visuomotor = None
    if isinstance(model, VisuomotorPolicy):
        dims["obs_dim"] = model.state_dim
        visuomotor = {
            "observation": asdict(model.obs_cfg),
            "camera_shapes": {k: list(v) for k, v in model.encoder.camera_shapes.items()},
            "goal_camera": model.goal_camera,
            "task_embeddings_shape": list(model.task_embeddings.shape),
        }
    payload = {
        "kind": model.kind if isinstance(model, VisuomotorPolicy) else
        next(k for k, cls in KINDS.items() if isinstance(model, cls)),
        "config": asdict(model.cfg),
        "dims": dims,
        "visuomotor": visuomotor,
        "normalizer": normalizer.to_dict(),
        "tasks": list(tasks),
        "spec": spec.to_dict(),
        "goal_dims": None if goal_dims is None else list(goal_dims),
        "state_dict": model.state_dict(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def checkpoint_kind(path: Path) -> str | None:
    """The ``kind`` a tether checkpoint was saved with (``beso``, ``gcbc``, ``iql``, ``bc``,
    ``calql``), or None for a file that is not one.

    Raises:
        FileNotFoundError: no such file.
    """
    payload = torch.load(Path(path), weights_only=False, map_location="cpu", mmap=True)
    return payload.get("kind") if isinstance(payload, dict) else None


def build_policy(kind: str, cfg: BesoConfig, dims: dict, visuomotor: dict | None) -> nn.Module:
    """A freshly initialized BESO/GCBC (``visuomotor`` None) or ``VisuomotorPolicy`` with the
    sizes a checkpoint records (the arguments ``save_policy`` writes)."""
    if visuomotor is None:
        return KINDS[kind](cfg, **dims)
    obs = dict(visuomotor["observation"])
    for key in ("state_dims", "cameras", "channels", "aux_state_dims"):
        if obs.get(key) is not None:
            obs[key] = tuple(obs[key])
    # weights come from the checkpoint: never fetch pre-trained ones again on load
    obs["weights"] = None
    return VisuomotorPolicy(
        kind, cfg, ObservationConfig(**obs), dims["obs_dim"], dims["action_dim"], dims["goal_dim"],
        {k: tuple(v) for k, v in visuomotor["camera_shapes"].items()}, visuomotor["goal_camera"],
        torch.zeros(*visuomotor["task_embeddings_shape"]),
    )


def load_policy(path: Path) -> TrainedPolicy:
    """Inverse of ``save_policy``.

    Raises:
        ValueError: the file is not a tether BESO/GCBC checkpoint (IQL and BC checkpoints are
            read by ``tether.policies.offline``).
    """
    payload = torch.load(Path(path), weights_only=False, map_location="cpu")
    kind = payload.get("kind") if isinstance(payload, dict) else None
    if kind not in KINDS:
        raise ValueError(f"{path} is not a tether BESO or GCBC checkpoint (kind {kind!r})")
    model = build_policy(kind, BesoConfig(**payload["config"]), payload["dims"], payload.get("visuomotor"))
    model.load_state_dict(payload["state_dict"])
    goal_dims = payload.get("goal_dims")
    return TrainedPolicy(
        model.eval(),
        Normalizer.from_dict(payload["normalizer"]),
        payload["tasks"],
        RobotSpec.from_dict(payload["spec"]),
        None if goal_dims is None else tuple(goal_dims),
    )
