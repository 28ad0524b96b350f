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
    critic: bool = False
    """GCIQL: export the critic min(Q1, Q2)(s, g, a) (critic.onnx, for tether eval --critic)
    instead of the actor."""


def export(cmd: ExportCommand) -> tuple[Path, float, int]:
    """Export any tether checkpoint (BESO, GCBC; IQL, BC, Cal-QL and GCIQL: their actor; GCIQL's
    critic with ``--critic``) and check parity; returns (onnx path, max abs difference, parameter
    count).

    Raises:
        FileNotFoundError: no checkpoint file.
        PolicyLoadError: a file torch cannot load (cut short, overwritten).
        ValueError: the parity check fails (difference above ``cmd.tolerance``).
        UsageError: a BESO sampling setting or ``--critic`` for a checkpoint without one.
    """
    from tether.policies.beso import Beso
    from tether.policies.checkpoint import checkpoint_kind, load_policy
    from tether.policies.export import export_policy, parity
    from tether.policies.offline import OFFLINE_KINDS, load_offline_policy
    from tether.robot.runner import PolicyLoadError

    overrides = {k: v for k, v in (("num_steps", cmd.num_steps), ("guidance_weight", cmd.guidance_weight),
                                   ("sampler", cmd.sampler)) if v is not None}
    if not cmd.checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint at {cmd.checkpoint}: tether export reads the policy.pt "
                                "that tether train writes")
    try:
        kind = checkpoint_kind(cmd.checkpoint)
    except Exception as e:  # noqa: BLE001 - torch.load's errors on a damaged file are many
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise PolicyLoadError(f"{cmd.checkpoint} is not a checkpoint torch can load ({first}; cut short "
                              "or overwritten? train again, or take checkpoints/policy.pt)") from None
    if cmd.critic and kind != "gciql":
        raise UsageError(f"--critic exports a GCIQL checkpoint's critic; {cmd.checkpoint} is a {kind} checkpoint")
    if kind == "gciql":
        return _export_gciql(cmd, overrides)
    if kind in OFFLINE_KINDS:
        learner, normalizer, tasks, spec = load_offline_policy(cmd.checkpoint)
        model, goal_dims = learner.actor, None
    else:
        policy = load_policy(cmd.checkpoint)
        model, normalizer, tasks, spec, goal_dims = (policy.model, policy.normalizer, policy.tasks, policy.spec,
                                                     policy.goal_dims)
    if overrides:
        if not isinstance(model, Beso):
            raise _not_beso(overrides)
        # sampling settings change no weight: the trained denoiser runs under the new sampler
        model.cfg = dataclasses.replace(model.cfg, **overrides)
    out = cmd.out or cmd.checkpoint.with_name("policy.onnx")
    export_policy(model, normalizer, spec, tasks, out, goal_dims=goal_dims)
    diff = parity(model, normalizer, spec, out, len(tasks), goal_dims=goal_dims)
    if diff > cmd.tolerance:
        raise ValueError(f"ONNX and torch differ by {diff:.2e} > {cmd.tolerance:.0e}")
    return out, diff, sum(p.numel() for p in model.parameters())


def _not_beso(overrides: dict) -> UsageError:
    return UsageError(f"--{next(iter(overrides)).replace('_', '-')} is a BESO sampling setting")


def _export_gciql(cmd: ExportCommand, overrides: dict) -> tuple[Path, float, int]:
    """The actor (policy.onnx) or with ``--critic`` the critic (critic.onnx) of a GCIQL checkpoint."""
    from tether.policies.gciql import GciqlCritic, export_gciql, export_gciql_critic, load_gciql

    if overrides:
        raise _not_beso(overrides)
    learner, normalizer, tasks, spec = load_gciql(cmd.checkpoint)
    if cmd.critic:
        out = cmd.out or cmd.checkpoint.with_name("critic.onnx")
        path, diff = export_gciql_critic(learner, normalizer, spec, tasks, out, cmd.tolerance)
        return path, diff, sum(p.numel() for p in GciqlCritic(learner).parameters())
    path, diff = export_gciql(learner.actor, normalizer, spec, tasks, cmd.out or cmd.checkpoint.with_name("policy.onnx"),
                              cmd.tolerance)
    return path, diff, sum(p.numel() for p in learner.actor.parameters())


def main(cmd: ExportCommand) -> None:
    """Entry point of ``tether export``: write the ONNX file and print its parity with torch."""
    out, diff, params = export(cmd)
    print(f"{out}: {params} parameters, max |onnx - torch| = {diff:.2e}")
