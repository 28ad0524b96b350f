"""``tether success-classifier``: train a success classifier on a dataset's camera frames, for a
sparse reward on the robot (SERL, RoboFuME).

::

    tether success-classifier DATASET --out runs/classifier [--relabel]   # classifier.onnx
    tether train DATASET --algo calql --iql.reward reward.classifier --out runs/calql
    tether finetune run --robot ADDRESS --policy runs/calql/policy.pt --reward classifier \\
        --classifier runs/classifier/classifier.onnx

The output folder gets ``classifier.pt``, ``classifier.onnx`` (what the robot-side actor runs with
onnxruntime), ``report.json`` (held-out accuracy, precision and recall at the threshold) and the
learning curve. ``--relabel`` writes the classifier's reward into the dataset as
``reward.<name>`` (default ``reward.classifier``; see
``tether.policies.success_classifier.classifier_rewards``), so offline pre-training sees the
reward fine-tuning will give.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from tether.launch import UsageError
from tether.policies.configs import SuccessClassifierConfig

DatasetPath = Annotated[Path, tyro.conf.arg(metavar="DATASET")]


@dataclass
class SuccessClassifierCommand:
    """Train a success classifier (camera frame -> P(success)) and export it to ONNX."""

    dataset: tyro.conf.Positional[DatasetPath]
    out: Path = Path("runs/classifier")
    classifier: tyro.conf.OmitArgPrefixes[SuccessClassifierConfig] = field(default_factory=SuccessClassifierConfig)
    relabel: bool = False
    """Write the classifier's sparse reward of every row into the dataset as reward.<name>."""
    name: str = "classifier"
    """Relabelled column: reward.<name>."""
    cache_dir: Path | None = None
    """Decoded-video cache folder (default: $TETHER_CACHE_DIR or ~/.cache/tether/videos)."""
    json: bool = False
    """Print the report as JSON."""


def fit(cmd: SuccessClassifierCommand, on_step=None) -> dict:
    """Run ``tether success-classifier``; returns the report (with ``column`` when relabelled).

    Raises:
        UsageError: a bad column name. ClassifierDataError (a DatasetError): no success labels,
        no positives or negatives. DatasetError: unreadable dataset, unknown camera.
    """
    from tether.policies.relabel import reward_column
    from tether.policies.success_classifier import classifier_rewards, fit_success_classifier
    from tether.robot.dataset import Dataset, VideoCache
    from tether.robot.dataset.columns import add_column

    if "/" in cmd.name or not cmd.name:
        raise UsageError(f"--name must be a plain name, got {cmd.name!r}")
    ds = Dataset(cmd.dataset)
    cmd.out.mkdir(parents=True, exist_ok=True)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cmd).items()}
    (cmd.out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    result = fit_success_classifier(ds, cmd.classifier, cmd.out, on_step, VideoCache(ds, cache_dir=cmd.cache_dir))
    report = dict(result.report)
    if cmd.relabel:
        column = reward_column(cmd.name)
        add_column(cmd.dataset, column, classifier_rewards(result.probabilities, cmd.classifier.threshold))
        report["column"] = column
        (cmd.out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _percent(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def main(cmd: SuccessClassifierCommand) -> None:
    """Entry point of ``tether success-classifier``."""
    from tether.launch.progress import training_progress

    with training_progress("success classifier", cmd.classifier.steps, disable=cmd.json) as on_step:
        report = fit(cmd, on_step)
    if cmd.json:
        print(json.dumps(report, indent=2))
        return
    val = report["val"]
    print(f"held out ({report['val_episodes']} episodes, {val['frames']} frames, {val['positives']} successes): "
          f"accuracy {_percent(val['accuracy'])}, precision {_percent(val['precision'])}, "
          f"recall {_percent(val['recall'])} at P >= {report['threshold']}")
    if "column" in report:
        print(f"relabelled {cmd.dataset}: column {report['column']}")
    print(f"wrote {report['onnx']} (max |onnx - torch| = {report['parity']:.1e}), {cmd.out}/report.json")
