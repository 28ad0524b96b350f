"""A success classifier: P(the task is achieved | one camera frame), thresholded into a sparse
reward for online fine-tuning on a robot.

This is the reward of SERL (Luo et al., "SERL: A Software Suite for Sample-Efficient Robotic
Reinforcement Learning", ICRA 2024) and HIL-SERL, and RoboFuME's (Yang et al., "Robot Fine-Tuning
Made Easy", ICRA 2024) success detector in its simplest form: a small CNN trained with binary
cross-entropy on frames labelled success or failure, whose thresholded output is the reward
(1 on success, 0 otherwise) and ends the episode.

Labels come from a tether dataset: a frame is a *positive* when its row's ``next.success`` is set
or it is one of the last ``positive_frames`` frames of a successful episode (an episode that ends
at success records a single success row; its last frames already show the achieved task, as
demonstrations' final frames do in RoboFuME's data); the ``ignore_frames`` frames before those
are left out (they look like success and are not labelled so); every other frame is a negative.
Positives are rare, so every batch is half positives and half negatives. Frames get DrQ's random
shift (Yarats et al., "Image Augmentation Is All You Need", ICLR 2021): edge-pad by
``shift_pixels`` and crop back at a random offset.

Exported to ONNX (``classifier.onnx``): input ``image`` uint8 [B, H, W, 3] (the camera's frames as
recorded), output ``success_prob`` [B]; metadata ``tether.classifier`` names the camera, image
shape and threshold. ``tether.perception.success_rewards.ClassifierReward`` runs it on the robot
computer with onnxruntime.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tether.perception.success_rewards import CLASSIFIER_META_KEY
from tether.policies.configs import SuccessClassifierConfig, TrainConfig
from tether.policies.networks import ImageEncoder, mlp
from tether.robot.dataset import Dataset, DatasetError, VideoCache

POSITIVE, NEGATIVE, IGNORED = 1, 0, -1


class ClassifierDataError(DatasetError):
    """The dataset cannot train a success classifier: no ``next.success`` column, or no positive
    or no negative frame."""


class SuccessClassifier(nn.Module):
    """uint8 frames [B, H, W, 3] -> success logits [B] (``ImageEncoder``, then an MLP head)."""

    def __init__(self, cfg: SuccessClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = ImageEncoder(cfg.channels, 64)
        self.head = mlp(64, cfg.hidden, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> logits [B]."""
        return self.head(self.encoder(image)).squeeze(-1)

    def loss(self, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of the logits against ``target`` [B] (1 success, 0 not)."""
        return F.binary_cross_entropy_with_logits(self(image), target)


class _ProbGraph(nn.Module):
    """The exported graph: probabilities, not logits, so the robot side thresholds them directly."""

    def __init__(self, model: SuccessClassifier):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> P(success) [B]."""
        return torch.sigmoid(self.model(image))


def success_labels(ds: Dataset, cfg: SuccessClassifierConfig) -> list[np.ndarray]:
    """Per episode (dataset order) int8 [T]: 1 positive, 0 negative, -1 left out (see the module
    docstring).

    Raises:
        ClassifierDataError: no ``next.success`` column.
    """
    if "next.success" not in ds.features:
        raise ClassifierDataError(f"{ds.root} has no next.success column to label frames with")
    out = []
    for i in range(len(ds)):
        success = ds.episode(i, ["next.success"])["next.success"].reshape(-1).astype(bool)
        label = np.zeros(len(success), np.int8)
        if success.any():
            end = len(success)
            label[max(0, end - cfg.positive_frames - cfg.ignore_frames):] = IGNORED
            label[max(0, end - cfg.positive_frames):] = POSITIVE
            label[success] = POSITIVE
        out.append(label)
    return out


def random_shift(images: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """DrQ's random shift of uint8 [B, H, W, 3]: edge padding by ``pad``, then a crop of the
    original size at a random offset per image."""
    if pad <= 0:
        return images
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    dy, dx = rng.integers(0, 2 * pad + 1, (2, b))
    return np.stack([padded[k, dy[k]:dy[k] + h, dx[k]:dx[k] + w] for k in range(b)])


def predict(model: SuccessClassifier, frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """P(success) of uint8 frames [N, H, W, 3]: float32 [N]."""
    model.eval()
    with torch.no_grad():
        out = [torch.sigmoid(model(torch.from_numpy(np.array(frames[i:i + batch]))))
               for i in range(0, len(frames), batch)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def classification_report(prob: np.ndarray, label: np.ndarray, threshold: float) -> dict:
    """Accuracy, precision, recall and counts of ``prob >= threshold`` against 0/1 ``label``."""
    pred, truth = prob >= threshold, label == POSITIVE
    tp, fp = int((pred & truth).sum()), int((pred & ~truth).sum())
    fn, tn = int((~pred & truth).sum()), int((~pred & ~truth).sum())
    return {"frames": int(len(label)), "positives": int(truth.sum()), "accuracy": (tp + tn) / max(1, len(label)),
            "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
            "false_positives": fp, "false_negatives": fn}


@dataclass
class ClassifierResult:
    """What :func:`fit_success_classifier` returns: the model (EMA weights), its report, and its
    P(success) of every frame per episode (dataset order)."""

    model: SuccessClassifier
    report: dict
    probabilities: list[np.ndarray]


def fit_success_classifier(
    dataset: Dataset | Path | str,
    cfg: SuccessClassifierConfig = SuccessClassifierConfig(),
    out_dir: Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
    cache: VideoCache | None = None,
) -> ClassifierResult:
    """Train the classifier on a dataset's frames and report it on held-out episodes.

    Writes, when ``out_dir`` is given: ``classifier.pt``, ``classifier.onnx`` (parity with torch
    checked), ``report.json`` and the learning curve.

    Raises:
        ClassifierDataError: no ``next.success`` column, or the training episodes lack positives
            or negatives.
        DatasetError: unreadable dataset or unknown camera.
    """
    from tether.policies.reward_model import check_camera
    from tether.policies.train import batch_rng, train

    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    camera = check_camera(ds, cfg.camera)
    cache = cache or VideoCache(ds)
    labels = success_labels(ds, cfg)
    frames = [cache.array(camera, i) for i in range(len(ds))]
    if not 0 < cfg.val_fraction < 1 or len(ds) < 2:
        raise ClassifierDataError(f"need >= 2 episodes and 0 < val_fraction < 1 (got {len(ds)}, {cfg.val_fraction})")
    order = np.random.default_rng(cfg.seed).permutation(len(ds))
    n_val = min(len(ds) - 1, max(1, round(cfg.val_fraction * len(ds))))
    val_eps, train_eps = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    rows = {kind: [(e, t) for e in train_eps for t in np.flatnonzero(labels[e] == kind)]
            for kind in (POSITIVE, NEGATIVE)}
    for kind, name in ((POSITIVE, "success"), (NEGATIVE, "failure")):
        if not rows[kind]:
            raise ClassifierDataError(f"{ds.root}: the {len(train_eps)} training episodes hold no {name} frame")
    half = max(1, cfg.batch_size // 2)

    def sample_batch(step: int) -> dict[str, torch.Tensor]:
        rng = batch_rng(cfg.seed, step)
        picks = [rows[kind][j] for kind in (POSITIVE, NEGATIVE) for j in rng.integers(len(rows[kind]), size=half)]
        images = random_shift(np.stack([frames[e][t] for e, t in picks]), cfg.shift_pixels, rng)
        target = torch.cat([torch.ones(half), torch.zeros(half)])
        return {"image": torch.from_numpy(images), "target": target}

    torch.manual_seed(cfg.seed)
    model = SuccessClassifier(cfg)
    optim = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                        warmup_steps=min(100, max(1, cfg.steps // 10)), ema_decay=0.99,
                        checkpoint_every=max(1, cfg.steps), seed=cfg.seed)
    t0 = time.perf_counter()
    result = train(model, sample_batch, optim, out_dir, on_step=on_step)
    model = result.ema.eval()
    probabilities = [predict(model, f) for f in frames]

    def scored(episodes: list[int]) -> dict:
        prob = np.concatenate([probabilities[e] for e in episodes])
        label = np.concatenate([labels[e] for e in episodes])
        keep = label != IGNORED
        return classification_report(prob[keep], label[keep], cfg.threshold)

    report = {"dataset": str(ds.root), "camera": camera, "image_shape": list(frames[0].shape[1:]),
              "threshold": cfg.threshold, "train_episodes": len(train_eps), "val_episodes": len(val_eps),
              "train": scored(train_eps), "val": scored(val_eps),
              "final_loss": result.losses[-1] if result.losses else None,
              "seconds": round(time.perf_counter() - t0, 2), "config": asdict(cfg)}
    if out_dir is not None:
        out_dir = Path(out_dir)
        save_classifier(out_dir / "classifier.pt", model, camera, report["image_shape"])
        onnx_path = export_classifier(model, out_dir / "classifier.onnx", camera, report["image_shape"])
        report["onnx"] = str(onnx_path)
        report["parity"] = classifier_parity(model, onnx_path)
        (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return ClassifierResult(model, report, probabilities)


def save_classifier(path: Path, model: SuccessClassifier, camera: str, image_shape) -> Path:
    """Write the classifier with its settings, camera and image shape, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"kind": "success_classifier", "config": asdict(model.cfg), "camera": camera,
                "image_shape": list(image_shape), "state_dict": model.state_dict()}, tmp)
    tmp.replace(path)
    return path


def load_classifier(path: Path | str) -> tuple[SuccessClassifier, str, tuple[int, int, int]]:
    """Inverse of :func:`save_classifier`: (model in eval mode, camera, image shape).

    Raises:
        ValueError: not a tether success classifier.
    """
    payload = torch.load(Path(path), weights_only=False, map_location="cpu")
    if not isinstance(payload, dict) or payload.get("kind") != "success_classifier":
        raise ValueError(f"{path} is not a tether success classifier")
    c = payload["config"]
    cfg = SuccessClassifierConfig(**{**c, "channels": tuple(c["channels"]), "hidden": tuple(c["hidden"])})
    model = SuccessClassifier(cfg)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload["camera"], tuple(payload["image_shape"])


def export_classifier(model: SuccessClassifier, path: Path, camera: str, image_shape) -> Path:
    """``classifier.onnx``: ``image`` uint8 [B, H, W, 3] -> ``success_prob`` [B], with metadata
    ``tether.classifier`` = {camera, image_shape, threshold}."""
    from tether.policies.export import onnx_program, save_onnx

    example = (torch.zeros((2, *image_shape), dtype=torch.uint8),)
    proto = onnx_program(_ProbGraph(model.eval()), example, ["image"], ["success_prob"])
    meta = {CLASSIFIER_META_KEY: json.dumps({"camera": camera, "image_shape": list(image_shape),
                                  "threshold": model.cfg.threshold})}
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_onnx(proto, meta, path)


def classifier_parity(model: SuccessClassifier, onnx_path: Path, n: int = 16, seed: int = 0) -> float:
    """Max |onnxruntime - torch| of P(success) on ``n`` random frames."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape[1:]
    frames = np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)
    got = session.run(None, {"image": frames})[0]
    return float(np.abs(got - predict(model, frames)).max())


def classifier_rewards(probabilities: list[np.ndarray], threshold: float) -> list[np.ndarray]:
    """Per-episode sparse rewards float32 [T] for a dataset's rows: row t, the step from frame t
    to frame t + 1, is rewarded 1.0 when frame t + 1 is classified a success (what the robot-side
    reward gives the same step); the last row, whose next frame is not recorded, takes its own
    frame's."""
    out = []
    for prob in probabilities:
        nxt = np.concatenate([prob[1:], prob[-1:]]) if len(prob) else prob
        out.append((nxt >= threshold).astype(np.float32))
    return out
