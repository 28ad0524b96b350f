"""Saving and loading a trained policy with everything needed to rebuild and export it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from tether.policies.beso import Beso
from tether.policies.configs import BesoConfig
from tether.policies.data import Normalizer
from tether.robot.spec import RobotSpec


def save_policy(
    path: Path, model: Beso, normalizer: Normalizer, tasks: list[str], spec: RobotSpec
) -> Path:
    """Write ``model`` (pass the EMA weights) with its normalizer, tasks and robot spec."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = model.net
    payload = {
        "kind": "beso",
        "config": asdict(model.cfg),
        "dims": {
            "obs_dim": net.obs_emb.in_features,
            "action_dim": net.action_emb.in_features,
            "goal_dim": net.goal_emb.in_features,
        },
        "normalizer": normalizer.to_dict(),
        "tasks": list(tasks),
        "spec": spec.to_dict(),
        "state_dict": model.state_dict(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_policy(path: Path) -> tuple[Beso, Normalizer, list[str], RobotSpec]:
    """Inverse of ``save_policy``: (model in eval mode, normalizer, tasks, spec).

    Raises:
        ValueError: the file is not a tether policy checkpoint.
    """
    payload = torch.load(Path(path), weights_only=False, map_location="cpu")
    if not isinstance(payload, dict) or payload.get("kind") != "beso":
        raise ValueError(f"{path} is not a tether BESO checkpoint")
    model = Beso(BesoConfig(**payload["config"]), **payload["dims"])
    model.load_state_dict(payload["state_dict"])
    return (
        model.eval(),
        Normalizer.from_dict(payload["normalizer"]),
        payload["tasks"],
        RobotSpec.from_dict(payload["spec"]),
    )
