"""``tether export``: turn a trained ``policy.pt`` into ``policy.onnx`` with its metadata."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from tether.launch import UsageError


@dataclass
class ExportCommand:
    """Export a trained policy to ONNX (sampler, normalization and robot spec inside)."""

    checkpoint: tyro.conf.Positional[Path]
    """policy.pt written by tether train."""
    out: Path | None = None
    """ONNX file to write; default: policy.onnx next to the checkpoint."""
    tolerance: float = 1e-4
    """Maximum allowed |onnx - torch| on random inputs with the same noise."""
    num_steps: int | None = None
    """BESO: export with this many denoising steps instead of the trained setting."""
    guidance_weight: float | None = None
    """BESO: classifier-free guidance weight w (0: goal-free play policy, 1: conditional)."""
    sampler: Literal["ddim", "euler_ancestral"] | None = None
    """BESO: sampler to export instead of the trained setting."""


def export(cmd: ExportCommand) -> tuple[Path, float, int]:
    """Export and check parity; returns (onnx path, max abs difference, parameter count).

    Raises:
        ValueError: the parity check fails (difference above ``cmd.tolerance``).
    """
    from tether.policies.beso import Beso
    from tether.policies.checkpoint import load_policy
    from tether.policies.export import export_policy, parity

    policy = load_policy(cmd.checkpoint)
    overrides = {k: v for k, v in (("num_steps", cmd.num_steps), ("guidance_weight", cmd.guidance_weight),
                                   ("sampler", cmd.sampler)) if v is not None}
    if overrides:
        if not isinstance(policy.model, Beso):
            raise UsageError(f"--{next(iter(overrides)).replace('_', '-')} is a BESO sampling setting")
        # sampling settings change no weight: the trained denoiser runs under the new sampler
        policy.model.cfg = dataclasses.replace(policy.model.cfg, **overrides)
    out = cmd.out or cmd.checkpoint.with_name("policy.onnx")
    args = (policy.model, policy.normalizer, policy.spec)
    export_policy(*args, policy.tasks, out, goal_dims=policy.goal_dims)
    diff = parity(*args, out, len(policy.tasks), goal_dims=policy.goal_dims)
    if diff > cmd.tolerance:
        raise ValueError(f"ONNX and torch differ by {diff:.2e} > {cmd.tolerance:.0e}")
    return out, diff, sum(p.numel() for p in policy.model.parameters())


def main(cmd: ExportCommand) -> None:
    out, diff, params = export(cmd)
    print(f"{out}: {params} parameters, max |onnx - torch| = {diff:.2e}")
