"""One training loop for tether's learners: AdamW with warm-up and cosine decay, EMA weights,
checkpoints with resume, a per-step callback for progress display, and a PNG learning curve, on
the CPU or a CUDA GPU (``TrainConfig.device``).

A learner is any ``nn.Module`` with a ``loss(**batch) -> scalar tensor`` method, and optionally an
``after_step()`` method called after each optimizer step (IQL's target critics); batches come from
a ``sample_batch(step) -> dict`` function so data loading stays with the data. Samplers draw
from :func:`batch_rng` and the checkpoint holds torch's RNG state, so a resumed run sees the same
batches and noise as one that was never stopped (long runs span several sessions).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from tether.policies.configs import TrainConfig


@dataclass
class TrainResult:
    """What ``train`` returns: the EMA model (for evaluation/export) and the loss history."""

    ema: nn.Module
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless started by ``torchrun`` with several
    processes, in which case the process group is initialized here (gloo on CPU, NCCL on CUDA) and
    destroyed at exit."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        # one group for both kinds of tensor: NCCL for CUDA ones, gloo for CPU ones (a run on CPU)
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
        # A group left to the interpreter's teardown can abort the process ("terminate called
        # without an active exception") while its communication threads still run.
        atexit.register(_destroy_process_group)
    return dist.get_rank(), dist.get_world_size()


def resolve_device(name: str) -> torch.device:
    """The torch device that ``TrainConfig.device`` names.

    ``auto`` is ``cuda`` when torch sees a CUDA GPU, else ``cpu``. Under ``torchrun`` with several
    processes, ``cuda`` (and ``auto`` on a GPU machine) is ``cuda:LOCAL_RANK``, one GPU per process
    as PyTorch's DDP tutorial places them.

    Raises:
        ValueError: an unknown device name, or a CUDA device that this torch cannot use (no GPU, a
            CPU-only build, or an index past the GPUs it sees).
    """
    try:
        device = torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                              "cpu" if name == "auto" else name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name!r} asked for, but torch {torch.__version__} sees no CUDA GPU; "
                             "use cpu, or auto")
        if device.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if (device.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"{str(device)!r} asked for, but torch sees {torch.cuda.device_count()} GPU(s)")
    return device


def batch_rng(seed: int, step: int) -> np.random.Generator:
    """The generator a ``sample_batch`` draws step ``step``'s batch from.

    Keyed by (seed, data-parallel rank, step) rather than advanced from one stream: a run resumed
    at step k draws the batches an uninterrupted run drew from step k on, and ``torchrun`` ranks
    draw different ones. Costs ~30 us per step.
    """
    return np.random.default_rng([seed, distributed_rank()[0], step])


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        # every rank leaves together: a peer whose connection closes under a live gloo context
        # aborts (a rank that crashed instead is killed by torchrun, so this cannot hang)
        dist.barrier()
        dist.destroy_process_group()


class _LossForward(nn.Module):
    """``forward(**batch) = model.loss(**batch)``: DistributedDataParallel synchronizes gradients
    only for what runs through ``forward``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, **batch) -> torch.Tensor:
        return self.model.loss(**batch)


def train(
    model: nn.Module,
    sample_batch: Callable[[int], dict[str, torch.Tensor]],
    cfg: TrainConfig,
    out_dir: Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
    resume: bool = False,
    on_checkpoint: Callable[[int, nn.Module], None] | None = None,
) -> TrainResult:
    """Train ``model`` for ``cfg.steps`` steps.

    Args:
        model: has ``loss(**batch)``.
        sample_batch: returns the batch for a step.
        out_dir: checkpoints go to ``out_dir/checkpoints/last.pt`` (with the optimizer and EMA,
            and torch's RNG state, so ``resume=True`` continues where a run stopped, as if it had
            not), and ``out_dir/learning_curve.png``.
        on_step: called with (step, loss) after each step, e.g. to advance a progress bar.
        on_checkpoint: called with (steps done, the EMA model) after each checkpoint is written,
            e.g. to save a policy that can be exported while training goes on.

    The model trains on ``cfg.device`` (:func:`resolve_device`); ``sample_batch`` returns CPU
    tensors, moved there each step. When ``train`` returns, the model and the EMA model are back
    on the CPU, where callers save, export and evaluate them.

    Raises:
        ValueError: ``cfg.device`` names no usable device.
        FloatingPointError: the loss is NaN or infinite.

    Data-parallel under ``torchrun --nproc-per-node N``: every process draws its own batches
    (``batch_rng`` keys them by rank), gradients are averaged by
    ``DistributedDataParallel`` (PyTorch docs, "Getting Started with Distributed Data Parallel"),
    so the effective batch is N x ``cfg.batch_size``; only rank 0 writes checkpoints and plots and
    calls ``on_step`` and ``on_checkpoint``.
    """
    device = resolve_device(cfg.device)
    rank, world = distributed_rank()
    torch.manual_seed(cfg.seed)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
    result = TrainResult(ema=ema.module)
    start = 0
    ckpt = None if out_dir is None else Path(out_dir) / "checkpoints" / "last.pt"
    if resume and ckpt is not None and ckpt.exists():
        # on the CPU (a GPU run resumes anywhere); load_state_dict copies onto the model's device
        state = torch.load(ckpt, weights_only=False, map_location="cpu")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = state["step"]
        if "torch_rng" in state:  # checkpoints before it was stored resume with the seed's stream
            torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in state:  # dropout's masks on the GPU
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        result.steps, result.losses = state["history"]["steps"], state["history"]["losses"]
    t0 = time.perf_counter()
    model.train()
    compute_loss: nn.Module = _LossForward(model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # broadcasts rank 0's weights
        compute_loss = DistributedDataParallel(compute_loss, device_ids=None if device.type == "cpu" else [device])
    if rank != 0:
        ckpt, out_dir, on_step, on_checkpoint = None, None, None, None
    after_step = getattr(model, "after_step", None)  # e.g. IQL's target critics (Polyak)
    for step in range(start, cfg.steps):
        batch = sample_batch(step)
        if device.type != "cpu":
            batch = {k: _to_device(v, device) for k, v in batch.items()}
        loss = compute_loss(**batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if after_step is not None:
            after_step()
        sched.step()
        ema.update_parameters(model)
        value = float(loss.detach())
        if step % 10 == 0 or step == cfg.steps - 1:
            result.steps.append(step)
            result.losses.append(value)
        if on_step is not None:
            on_step(step, value)
        last = step == cfg.steps - 1
        if ckpt is not None and ((step + 1) % cfg.checkpoint_every == 0 or last):
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(".tmp")
            torch.save(
                {
                    "model": model.state_dict(),
                    "ema": ema.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "step": step + 1,
                    "torch_rng": torch.get_rng_state(),  # BESO's noise levels, dropout on the CPU
                    **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
                    "config": asdict(cfg),
                    "history": {"steps": result.steps, "losses": result.losses},
                },
                tmp,
            )
            tmp.replace(ckpt)  # atomic: a crash never leaves a half-written checkpoint
            if on_checkpoint is not None:
                on_checkpoint(step + 1, ema.module)
    result.seconds = time.perf_counter() - t0
    model.cpu()
    result.ema.cpu().eval()
    if out_dir is not None:
        plot_learning_curve(result, Path(out_dir) / "learning_curve.png")
        (Path(out_dir) / "train_history.json").write_text(
            json.dumps({"steps": result.steps, "losses": result.losses, "world_size": world})
        )
    return result


def _to_device(value, device: torch.device):
    """A batch entry on ``device``: a tensor, or a dict of them (a visuomotor policy's frames)."""
    if isinstance(value, dict):
        return {k: v.to(device, non_blocking=True) for k, v in value.items()}
    return value.to(device, non_blocking=True)


def plot_learning_curve(result: TrainResult, path: Path) -> None:
    """Write the loss curve (log scale, with a moving average) to ``path`` as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    losses = np.asarray(result.losses)
    ax.plot(result.steps, losses, alpha=0.3, label="loss")
    k = max(1, len(losses) // 30)
    if len(losses) > k:
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(result.steps[k - 1 :], smooth, label=f"moving average ({k})")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
