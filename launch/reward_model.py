"""``tether reward-model``: fit a Bradley-Terry reward ensemble on preference labels, and
optionally relabel the dataset with it.

::

    tether label DATASET --labeller vlm --pairs 2000 --task "open the drawer" --name vlm
    tether reward-model DATASET --labels vlm --input image --relabel   # adds reward.vlm
    tether train DATASET --algo iql --reward reward.vlm --out runs/iql

``--labels`` is a name under ``DATASET/labels/`` (what ``tether label --name`` wrote) or a path to a
label parquet. The output folder gets ``reward_model.pt``, ``report.json`` (pairs, held-out
accuracy per member and of the ensemble, Spearman rho against ``next.reward`` when recorded and the
held-out accuracy against its order),
``report.png``, ``learning_curve.png`` and ``config.json``. ``--relabel`` writes the ensemble's
reward of every frame into the column ``reward.<name>`` (default: the labels' name), keeping
``next.reward``; see ``tether.policies.reward_model`` and ``tether.policies.relabel``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from tether.launch import UsageError
from tether.policies.configs import RewardModelConfig

DatasetPath = Annotated[Path, tyro.conf.arg(metavar="DATASET")]


@dataclass
class RewardModelCommand:
    """Fit a Bradley-Terry reward model (ensemble of 3) on DATASET/labels/NAME and relabel rewards."""

    dataset: tyro.conf.Positional[DatasetPath]
    labels: str
    """Label set: a name under DATASET/labels/ (written by tether label) or a .parquet path."""
    out: Path | None = None
    """Output folder; default runs/reward-model/<labels name>."""
    model: tyro.conf.OmitArgPrefixes[RewardModelConfig] = field(default_factory=RewardModelConfig)
    relabel: bool = False
    """Write the learned reward of every frame into the dataset as reward.<name>."""
    name: str | None = None
    """Relabelled column: reward.<name>; default the labels' name."""
    correlate_with: str = "next.reward"
    """True per-frame reward for the Spearman correlation in the report (skipped if absent)."""
    cache_dir: Path | None = None
    """Decoded-video cache folder (default: $TETHER_CACHE_DIR or ~/.cache/tether/videos)."""
    json: bool = False
    """Print the report as JSON."""


def _labels_path(cmd: RewardModelCommand) -> Path:
    given = Path(cmd.labels)
    if given.suffix == ".parquet":
        return given
    if "/" in cmd.labels or not cmd.labels:
        raise UsageError(f"--labels is a name under {cmd.dataset}/labels/ or a .parquet file, got {cmd.labels!r}")
    path = Path(cmd.dataset) / "labels" / f"{cmd.labels}.parquet"
    if not path.exists():
        found = sorted(p.stem for p in (Path(cmd.dataset) / "labels").glob("*.parquet"))
        raise UsageError(f"no label set {cmd.labels!r} in {cmd.dataset}/labels/ (there are: "
                         f"{', '.join(found) or 'none'}); write one with tether label --name {cmd.labels}")
    return path


def fit(cmd: RewardModelCommand, on_step=None, on_episode=None) -> dict:
    """Run ``tether reward-model``; returns the report (with ``column`` when relabelled).

    Raises:
        UsageError: unknown label set or bad name. LabelFileError (a DatasetError): labels that do
        not fit the dataset. DatasetError: unreadable dataset, unknown camera.
    """
    import dataclasses

    from tether.policies.relabel import relabel, reward_column
    from tether.policies.reward_model import fit_reward_model
    from tether.robot.dataset import Dataset, VideoCache

    labels = _labels_path(cmd)
    ds = Dataset(cmd.dataset)
    cfg = cmd.model
    if cfg.input == "image" and cfg.camera is None:
        meta = labels.with_suffix(".json")  # tether label's report names the camera it showed
        camera = json.loads(meta.read_text()).get("report", {}).get("camera") if meta.exists() else None
        cfg = dataclasses.replace(cfg, camera=camera)
    name = cmd.name or labels.stem
    column = reward_column(name)
    if "/" in name or not name:
        raise UsageError(f"--name must be a plain name, got {name!r}")
    out = cmd.out or Path("runs/reward-model") / labels.stem
    out.mkdir(parents=True, exist_ok=True)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cmd).items()}
    (out / "config.json").write_text(json.dumps({**config, "model": asdict(cfg)}, indent=2, default=str))
    cache = VideoCache(ds, cache_dir=cmd.cache_dir) if cfg.input == "image" else None
    result = fit_reward_model(ds, labels, cfg, out, on_step=on_step, cache=cache,
                              correlate_with=cmd.correlate_with)
    report = dict(result.report, out=str(out))
    if cmd.relabel:
        _, column = relabel(cmd.dataset, result.model, column, result.report["camera"], cache,
                            rewards=result.frame_rewards, on_episode=on_episode)
        report["column"] = column
        (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def main(cmd: RewardModelCommand) -> None:
    """Entry point of ``tether reward-model``."""
    from tether.launch.progress import training_progress

    with training_progress("reward model", cmd.model.steps, disable=cmd.json) as on_step:
        report = fit(cmd, on_step)
    if cmd.json:
        print(json.dumps(report, indent=2))
        return
    members = ", ".join("n/a" if a is None else f"{a:.3f}" for a in report["val_accuracy_members"])
    acc = "n/a" if report["val_accuracy"] is None else f"{report['val_accuracy']:.3f}"
    print(f"{report['pairs']} pairs ({report['unsure']} unsure, {report['unsure_policy']}); "
          f"held-out accuracy {acc} on {report['val_pairs']} pairs (members {members})")
    if "spearman" in report:
        print(f"Spearman rho vs {report['spearman']['column']}: {report['spearman']['rho']}; held-out accuracy "
              f"against its order {report['val_accuracy_true']} (the labels' {report['val_label_accuracy_true']})")
    if "column" in report:
        print(f"relabelled {cmd.dataset}: column {report['column']}")
    print(f"wrote {report['out']}/report.json")
