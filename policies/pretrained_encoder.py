"""``encoder.pt``: a pre-trained image encoder and what it expects, and loading it into a learner.

V-PTR (Bhateja, Ghosh et al., 2023) pre-trains a visual representation by ICVF on video
(``tether pretrain-value``) and initializes the encoder of offline RL with it, then trains on, or
keeps it fixed. The file holds the weights of one
:class:`~tether.policies.networks.ImageEncoder` with its architecture (channels, output width), the
frame size it was trained on and how frames were made (resize, interpolation); the encoder itself
converts uint8 RGB to float (/255 - 0.5), so raw frames of the same size go in unchanged.

:func:`init_image_encoders` copies it into every ``ImageEncoder`` of a learner (IQL's online
encoder and its target copy; BC's; Cal-QL's once it exists), after checking that architecture and
frame size agree.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tether.policies.networks import ImageEncoder
from tether.robot.dataset import DatasetError

KIND = "tether.image_encoder"


class EncoderInitError(DatasetError):
    """``encoder.pt`` does not fit the learner (architecture, frame size, or not an encoder file).
    A DatasetError, since it usually means the dataset's camera differs from the pre-training
    frames, so the command line prints it as one line."""


def encoder_channels(encoder: ImageEncoder) -> tuple[int, ...]:
    """Output channels of the encoder's convolutions, e.g. (16, 32, 32, 32)."""
    return tuple(m.out_channels for m in encoder.conv if isinstance(m, nn.Conv2d))


def save_encoder(path: Path | str, encoder: ImageEncoder, image_shape: tuple[int, ...],
                 preprocessing: dict, source: dict | None = None) -> Path:
    """Write ``encoder`` (atomically) with its channels, output width, frame shape (H, W, 3) and
    ``preprocessing``; ``source`` says what it was trained on (method, data, steps)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"kind": KIND, "channels": list(encoder_channels(encoder)), "out_dim": encoder.out_dim,
               "image_shape": [int(x) for x in image_shape], "preprocessing": dict(preprocessing),
               "source": dict(source or {}),
               "state_dict": {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_encoder(path: Path | str) -> dict:
    """The payload :func:`save_encoder` wrote.

    Raises:
        FileNotFoundError: no such file. EncoderInitError: not an encoder file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no encoder file {path} (tether pretrain-value writes OUT/encoder.pt)")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("kind") != KIND:
        raise EncoderInitError(f"{path} is not an image encoder file (tether pretrain-value writes OUT/encoder.pt)")
    return payload


def build_encoder(payload: dict) -> ImageEncoder:
    """An ``ImageEncoder`` with the file's architecture and weights."""
    encoder = ImageEncoder(tuple(payload["channels"]), payload["out_dim"])
    encoder.load_state_dict(payload["state_dict"])
    return encoder


def init_image_encoders(learner: nn.Module, path: Path | str, image_shape: tuple[int, ...] | None,
                        freeze: bool = False) -> int:
    """Load ``encoder.pt`` into every :class:`ImageEncoder` of ``learner``; with ``freeze``, turn
    their gradients off (the optimizer skips parameters without a gradient).

    Args:
        learner: e.g. ``Iql`` with ``encoder=image``.
        path: ``encoder.pt``.
        image_shape: (H, W, 3) of the frames the learner reads (its camera's shape).

    Returns:
        how many encoders were initialized.

    Raises:
        EncoderInitError: the learner has no image encoder, or channels, output width or frame size
            differ from the file's (the message gives both and the settings to change).
        FileNotFoundError: no such file.
    """
    payload = load_encoder(path)
    encoders = [m for m in learner.modules() if isinstance(m, ImageEncoder)]
    if not encoders:
        raise EncoderInitError(f"{path}: this learner reads no camera frame; use --iql.encoder image")
    want = (tuple(payload["channels"]), payload["out_dim"])
    have = (encoder_channels(encoders[0]), encoders[0].out_dim)
    if want != have:
        raise EncoderInitError(
            f"{path} holds an encoder with channels {list(want[0])} and {want[1]} features; this learner's has "
            f"channels {list(have[0])} and {have[1]} features (set --iql.channels {' '.join(map(str, want[0]))}, "
            f"or pre-train with --icvf.channels {' '.join(map(str, have[0]))} --icvf.feature-dim {have[1]})")
    trained = tuple(payload["image_shape"])
    if image_shape is None or tuple(image_shape) != trained:
        raise EncoderInitError(
            f"{path} was pre-trained on {trained[0]}x{trained[1]} frames but the camera gives "
            f"{'none' if image_shape is None else f'{image_shape[0]}x{image_shape[1]}'} "
            f"(pre-train with --icvf.image-size matching the camera)")
    for encoder in encoders:
        encoder.load_state_dict(payload["state_dict"])
        if freeze:
            encoder.requires_grad_(False)
    return len(encoders)
