"""``tether pretrain-value``: ICVF value pre-training on action-free video (V-PTR), for the image
encoder of offline RL.

::

    tether pretrain-value --videos 'clips/**/*.mp4' --out runs/icvf --icvf.image-size 64
    tether pretrain-value --dataset data/play --camera observation.images.front --out runs/icvf
    tether train data/robot --algo iql --iql.encoder image --iql.encoder-init runs/icvf/encoder.pt \\
        [--iql.freeze-encoder]

Each MP4 file matched by ``--videos`` is one episode (frames resized to a square, default 64 x 64),
or each episode of ``--dataset`` gives the frames of ``--camera`` (its own size unless
``--icvf.image-size``); actions and rewards are ignored. A share of the episodes
(``--icvf.val-fraction``) is held out. The output folder gets ``encoder.pt`` (the image encoder,
its frame size and preprocessing: what ``--iql.encoder-init`` reads), ``icvf.pt`` (the whole
value model), ``checkpoints/last.pt`` (``--resume``), ``value_report.json`` (Spearman rho between
V(s, g = final frame) and minus the steps to go, per held-out episode and mean, and on a few
training episodes, and with ``--report-dataset`` on the episodes of another dataset, e.g. of the
target task), ``value_curves.png``, ``learning_curve.png``, ``metrics.json`` and ``config.json``.
See ``tether.policies.icvf``.
"""

from __future__ import annotations

import glob
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tether.launch import UsageError
from tether.policies.configs import IcvfConfig, TrainConfig

TRAIN_EPISODES_REPORTED = 8
"""Training episodes also scored in the report (held-out vs training shows over-fitting)."""


@dataclass
class PretrainValueCommand:
    """Pre-train an image encoder by ICVF value learning on action-free video (MP4 files or a dataset's camera)."""

    videos: str | None = None
    """Glob pattern of MP4 files, one episode each; quote it ('clips/**/*.mp4', ** recurses)."""
    dataset: Path | None = None
    """A tether / LeRobotDataset v3.0 folder whose camera frames are the episodes (instead of --videos)."""
    camera: str | None = None
    """The dataset's camera (video feature); default its first."""
    out: Path = Path("runs/pretrain-value")
    """Output folder: encoder.pt, icvf.pt, value_report.json, value_curves.png, learning_curve.png."""
    icvf: IcvfConfig = field(default_factory=IcvfConfig)
    optim: TrainConfig = field(default_factory=TrainConfig)
    resume: bool = False
    """Continue from out/checkpoints/last.pt, drawing the batches a run never stopped would have drawn."""
    report_dataset: Path | None = None
    """Another dataset (e.g. episodes of the task the encoder is for), never trained on, whose
    --camera frames are scored in the value report too (``target``, ``value_curves_target.png``)."""
    report_camera: str | None = None
    """--report-dataset's camera; default its first."""
    cache_dir: Path | None = None
    """Decoded-video cache folder for --dataset (default: $TETHER_CACHE_DIR or ~/.cache/tether/videos)."""
    json: bool = False
    """Print the report as JSON."""


def load_frames(cmd: PretrainValueCommand):
    """The episodes ``cmd`` names, as ``tether.policies.frames.FrameEpisodes``.

    Raises:
        UsageError: neither or both of --videos and --dataset, --camera with --videos, or no file
            matching the pattern. DatasetError: unreadable dataset or video, unknown camera.
    """
    from tether.policies.frames import FrameEpisodes

    if (cmd.videos is None) == (cmd.dataset is None):
        raise UsageError("give either --videos 'PATTERN' or --dataset DATASET")
    if cmd.videos is not None:
        if cmd.camera is not None:
            raise UsageError("--camera picks a dataset's camera; it goes with --dataset, not --videos")
        paths = sorted(glob.glob(cmd.videos, recursive=True))
        if not paths:
            raise UsageError(f"no files match --videos {cmd.videos!r}")
        return FrameEpisodes.from_videos(paths, cmd.icvf.image_size)
    return FrameEpisodes.from_dataset(cmd.dataset, cmd.camera, cmd.icvf.image_size, cmd.cache_dir)


def pretrain_value(cmd: PretrainValueCommand, on_step=None) -> dict:
    """Run ``tether pretrain-value``; returns the report (also written to value_report.json).

    Raises:
        UsageError: bad settings (device, goal mix, expectile, held-out share), or see
            :func:`load_frames`.
        DatasetError: see :func:`load_frames`; VideoReadError (a DatasetError): fewer than 2
            usable episodes.
    """
    import torch

    from tether.launch.train import check_device
    from tether.policies.frames import icvf_batches
    from tether.policies.icvf import Icvf
    from tether.policies.pretrained_encoder import save_encoder
    from tether.policies.sampling import GoalSampler
    from tether.policies.train import distributed_rank, train
    from tether.policies.value_report import plot_value_curves, spearman_report, value_curves

    cfg = cmd.icvf
    check_device(cmd.optim)
    if not 0 < cfg.val_fraction < 1:
        raise UsageError(f"--icvf.val-fraction must be in (0, 1), got {cfg.val_fraction}")
    torch.manual_seed(cmd.optim.seed)
    try:  # settings checked before any video is decoded
        goals = GoalSampler(p_future=cfg.p_future, p_current=cfg.p_current, p_random=cfg.p_random,
                            min_offset=1, gamma=cfg.discount)
        model = Icvf(cfg)
    except ValueError as e:
        raise UsageError(f"--icvf: {e}") from e
    frames = load_frames(cmd)
    train_eps, val_eps = frames.split(cfg.val_fraction, cmd.optim.seed)
    target = None
    if cmd.report_dataset is not None:  # read before training: a bad path fails now, not in an hour
        from tether.policies.frames import FrameEpisodes

        target = FrameEpisodes.from_dataset(cmd.report_dataset, cmd.report_camera, frames.image_shape[0],
                                            cmd.cache_dir)
    out = cmd.out
    out.mkdir(parents=True, exist_ok=True)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cmd).items()}
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    metrics: list[dict] = []

    def step_hook(step: int, loss: float) -> None:
        if step % 10 == 0 or step == cmd.optim.steps - 1:
            metrics.append({"step": step, **model.metrics})
        if on_step is not None:
            on_step(step, loss)

    result = train(model, icvf_batches(train_eps, cmd.optim.batch_size, goals, cmd.optim.seed), cmd.optim, out,
                   on_step=step_hook, resume=cmd.resume)
    if distributed_rank()[0] != 0:
        return {}
    ema = result.ema.eval()
    image_shape = frames.image_shape
    source = {"method": "ICVF (Ghosh et al. 2023), V-PTR (Bhateja, Ghosh et al. 2023)",
              "data": cmd.videos if cmd.videos is not None else str(cmd.dataset),
              "train_episodes": len(train_eps.episodes), "steps": cmd.optim.steps, "weights": "EMA"}
    save_encoder(out / "encoder.pt", ema.encoder, image_shape, frames.preprocessing, source)
    tmp = out / "icvf.pt.tmp"
    torch.save({"kind": "icvf", "config": asdict(cfg), "image_shape": list(image_shape),
                "preprocessing": frames.preprocessing, "state_dict": ema.state_dict()}, tmp)
    tmp.replace(out / "icvf.pt")
    held_out = value_curves(ema.value, val_eps)
    shown = train_eps.subset(range(min(TRAIN_EPISODES_REPORTED, len(train_eps.episodes))))
    report = {
        "held_out": spearman_report(held_out, val_eps.names),
        "train": spearman_report(value_curves(ema.value, shown), shown.names),
        "episodes": {"train": len(train_eps.episodes), "held_out": len(val_eps.episodes),
                     "skipped": frames.skipped},
        "frames": len(frames), "image_shape": list(image_shape), "preprocessing": frames.preprocessing,
        "steps": cmd.optim.steps, "seconds": round(result.seconds, 2),
        "final_loss": result.losses[-1] if result.losses else None,
        "last_metrics": metrics[-1] if metrics else {}, "out": str(out),
    }
    plot_value_curves(held_out, val_eps.names, out / "value_curves.png", cfg.discount)
    if target is not None:
        target_curves = value_curves(ema.value, target)
        report["target"] = {"dataset": str(cmd.report_dataset), **spearman_report(target_curves, target.names)}
        plot_value_curves(target_curves, target.names, out / "value_curves_target.png", cfg.discount,
                          title=f"{Path(cmd.report_dataset).name} episodes")
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / "value_report.json").write_text(json.dumps(report, indent=2))
    return report


def main(cmd: PretrainValueCommand) -> None:
    """Entry point of ``tether pretrain-value``."""
    from tether.launch.progress import training_progress

    with training_progress("icvf", cmd.optim.steps, disable=cmd.json) as on_step:
        report = pretrain_value(cmd, on_step)
    if not report:
        return
    if cmd.json:
        print(json.dumps(report, indent=2))
        return
    rho = report["held_out"]["mean_spearman"]
    print(f"ICVF on {report['frames']} frames ({report['episodes']['train']} episodes, "
          f"{report['episodes']['held_out']} held out) in {report['seconds']:.0f} s -> {cmd.out}/encoder.pt")
    print(f"held-out Spearman rho of V(s, final frame) vs -(steps to go): "
          f"{'undefined' if rho is None else f'{rho:.3f}'}")
    if "target" in report:
        rho = report["target"]["mean_spearman"]
        print(f"on {cmd.report_dataset}: {'undefined' if rho is None else f'{rho:.3f}'}")
