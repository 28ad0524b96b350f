"""Image encoders of visuomotor policies: camera frames uint8 [N, H, W, 3] -> features [N, F].

Each encoder is preprocessing plus a backbone, both inside the network so that an exported ONNX
graph takes raw frames as a robot's camera gives them:

* :class:`ImagePreprocess`: to float, optional resize (area or bilinear), a crop (random per frame in
  training, centred otherwise: robomimic's ``CropRandomizer``, Diffusion Policy's 84/96 crop),
  optional colour jitter in training, per-channel normalization.
* backbones: ``cnn`` (a small 3x3 stride-2 CNN, fast on a CPU), ``resnet18`` (torchvision's
  ResNet-18 with every BatchNorm replaced by GroupNorm, as Diffusion Policy does, Chi et al.,
  RSS 2023), ``clip`` (open_clip's image tower: Radford et al., ICML 2021; Ilharco et al.).
  The convolutional ones end in a spatial softmax (Levine, Finn et al., JMLR 2016; robomimic and
  LeRobot's diffusion policy use it: keypoints keep where things are, which a global average
  loses), then a linear projection to ``feature_dim`` and a LayerNorm.

Weights are never downloaded unless asked for (``ObservationConfig.weights``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from tether.policies.configs import ObservationConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's OPENAI_DATASET_MEAN
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ImagePreprocess(nn.Module):
    """uint8 [N, H, W, 3] RGB -> float [N, 3, h, w], normalized.

    Args:
        in_hw: (H, W) of the frames the policy is trained on (a robot's frames must match).
        resize: side of the square frame after resizing, or None to keep (H, W).
        crop: side of the crop as a share of the resized frame (1: none).
        mean, std: per-channel statistics the backbone expects (on [0, 1] values).
        color_jitter: training only: brightness and contrast factors in [1 - j, 1 + j].
    """

    def __init__(self, in_hw: tuple[int, int], resize: int | None, crop: float,
                 mean: tuple[float, ...], std: tuple[float, ...], color_jitter: float = 0.0):
        super().__init__()
        if not 0 < crop <= 1:
            raise ValueError(f"crop must be in (0, 1], got {crop}")
        self.in_hw = tuple(in_hw)
        self.resize = resize
        h, w = (resize, resize) if resize else self.in_hw
        self.resized_hw = (h, w)
        self.out_hw = (max(1, round(h * crop)), max(1, round(w * crop)))
        self.color_jitter = color_jitter
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # contiguous: torch.export otherwise specializes the batch size of a permuted uint8 input
        x = image.permute(0, 3, 1, 2).contiguous().float() / 255.0
        if self.resize:
            # whole-number shrink factors average pixel blocks (no aliasing: a 2-pixel object
            # survives a 2x shrink), other sizes are bilinear
            whole = all(a % b == 0 for a, b in zip(self.in_hw, self.resized_hw))
            x = F.interpolate(x, size=self.resized_hw, mode="area" if whole else "bilinear",
                              **({} if whole else {"align_corners": False}))
        (h, w), (ch, cw) = self.resized_hw, self.out_hw
        if self.training and (ch, cw) != (h, w):
            n = x.shape[0]
            top = torch.randint(0, h - ch + 1, (n, 1), device=x.device)
            left = torch.randint(0, w - cw + 1, (n, 1), device=x.device)
            rows = top + torch.arange(ch, device=x.device)
            cols = left + torch.arange(cw, device=x.device)
            idx = torch.arange(n, device=x.device)[:, None, None]
            # advanced indices around a slice put their dimensions first: [N, ch, cw, 3]
            x = x[idx, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        else:
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[:, :, top : top + ch, left : left + cw]
        if self.training and self.color_jitter > 0:
            n = x.shape[0]
            j = self.color_jitter
            brightness = 1 + (torch.rand(n, 1, 1, 1, device=x.device) * 2 - 1) * j
            contrast = 1 + (torch.rand(n, 1, 1, 1, device=x.device) * 2 - 1) * j
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = ((x - mean) * contrast + mean * brightness).clamp(0, 1)
        return (x - self.mean) / self.std


class SpatialSoftmax(nn.Module):
    """Feature map [N, C, h, w] -> keypoints [N, 2K]: a 1x1 convolution to K maps, a softmax over
    each map's positions, and the expected (x, y) in [-1, 1] (Levine, Finn et al., "End-to-End
    Training of Deep Visuomotor Policies", JMLR 2016)."""

    def __init__(self, channels: int, hw: tuple[int, int], keypoints: int = 32):
        super().__init__()
        self.keypoints = nn.Conv2d(channels, keypoints, 1)
        h, w = hw
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1))  # [h*w, 2]
        self.out_dim = 2 * keypoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.keypoints(x).flatten(2).softmax(dim=-1)  # [N, K, h*w]
        return (maps @ self.grid).flatten(1)


def small_cnn(channels: tuple[int, ...]) -> nn.Sequential:
    """3x3 stride-2 convolutions (each halves the frame) with GroupNorm and ReLU."""
    layers: list[nn.Module] = []
    width = 3
    for c in channels:
        layers += [nn.Conv2d(width, c, 3, stride=2, padding=1), nn.GroupNorm(_groups(c), c), nn.ReLU()]
        width = c
    return nn.Sequential(*layers)


def _groups(channels: int) -> int:
    """GroupNorm groups: 16 channels a group (Diffusion Policy's ``replace_bn_with_gn``)."""
    return max(1, channels // 16)


def resnet18_gn(weights: str | None) -> nn.Sequential:
    """torchvision's ResNet-18 up to its last residual stage (stride 32, 512 channels), every
    BatchNorm a GroupNorm. ``weights``: None, a local state-dict file, or ``imagenet``
    (torchvision's IMAGENET1K_V1, which torchvision fetches once); BatchNorm's running statistics
    have no GroupNorm counterpart and are dropped, its scales and shifts are kept.

    Raises:
        FileNotFoundError: a weights file that does not exist.
        ValueError: a weights file that is not a ResNet-18 state dict.
    """
    import torchvision

    net = torchvision.models.resnet18(weights=None, norm_layer=lambda c: nn.GroupNorm(_groups(c), c))
    if weights:
        if weights == "imagenet":
            state = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        else:
            path = Path(weights)
            if not path.is_file():
                raise FileNotFoundError(f"ResNet-18 weights {path} do not exist")
            state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if "running_" not in k and "num_batches" not in k}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith("fc.")]:
            raise ValueError(f"{weights} is not a ResNet-18 state dict (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
    return nn.Sequential(*list(net.children())[:-2])


class ConvEncoder(nn.Module):
    """Preprocessing, a convolutional backbone, spatial softmax, projection and LayerNorm:
    uint8 [N, H, W, 3] -> [N, feature_dim]."""

    def __init__(self, preprocess: ImagePreprocess, backbone: nn.Module, feature_dim: int):
        super().__init__()
        self.preprocess = preprocess
        self.backbone = backbone
        with torch.no_grad():
            probe = backbone.eval()(torch.zeros(1, 3, *preprocess.out_hw))
        backbone.train()
        self.pool = SpatialSoftmax(probe.shape[1], tuple(probe.shape[2:]))
        self.head = nn.Sequential(nn.Linear(self.pool.out_dim, feature_dim), nn.LayerNorm(feature_dim))
        self.out_dim = feature_dim

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.backbone(self.preprocess(image))))


class ClipImageEncoder(nn.Module):
    """open_clip's image tower, then a projection and LayerNorm: uint8 [N, H, W, 3] -> [N, F].
    Frames are resized so that the crop is the tower's input size."""

    def __init__(self, preprocess: ImagePreprocess, tower: nn.Module, embed_dim: int, feature_dim: int):
        super().__init__()
        self.preprocess = preprocess
        self.tower = tower
        self.head = nn.Sequential(nn.Linear(embed_dim, feature_dim), nn.LayerNorm(feature_dim))
        self.out_dim = feature_dim

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower(self.preprocess(image)))


def clip_model(name: str, weights: str | None):
    """open_clip model ``name`` with ``weights`` (a pretrained tag or a local file; None: random).

    Raises:
        ImportError: open_clip is not installed (the ``train`` extra).
        ValueError: an architecture open_clip does not know.
    """
    import open_clip

    if name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {name!r} (e.g. ViT-S-32, ViT-B-32, RN50)")
    if weights is not None:
        return open_clip.create_model(name, pretrained=weights)
    import logging

    logging.disable(logging.WARNING)  # "No pretrained weights loaded": random weights were asked for
    try:
        return open_clip.create_model(name, pretrained=None)
    finally:
        logging.disable(logging.NOTSET)


def build_image_encoder(cfg: ObservationConfig, in_hw: tuple[int, int]) -> nn.Module:
    """The image encoder ``cfg`` describes for frames of size ``in_hw`` (H, W): a module
    uint8 [N, H, W, 3] -> float [N, cfg.feature_dim] with ``out_dim`` and ``preprocess``.

    Raises:
        ValueError: an unknown encoder, a crop outside (0, 1], weights that do not fit.
    """
    if cfg.encoder == "cnn":
        pre = ImagePreprocess(in_hw, cfg.image_size, cfg.crop, (0.5,) * 3, (0.5,) * 3, cfg.color_jitter)
        return ConvEncoder(pre, small_cnn(tuple(cfg.channels)), cfg.feature_dim)
    if cfg.encoder == "resnet18":
        pre = ImagePreprocess(in_hw, cfg.image_size, cfg.crop, IMAGENET_MEAN, IMAGENET_STD, cfg.color_jitter)
        encoder = ConvEncoder(pre, resnet18_gn(cfg.weights), cfg.feature_dim)
        _freeze(encoder.backbone, cfg.freeze_encoder)
        return encoder
    if cfg.encoder == "clip":
        visual = clip_model(cfg.clip_model, cfg.weights).visual
        side = visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size
        pre = ImagePreprocess(in_hw, math.ceil(side / cfg.crop), cfg.crop, CLIP_MEAN, CLIP_STD, cfg.color_jitter)
        pre.out_hw = (side, side)  # the tower takes exactly its own size
        encoder = ClipImageEncoder(pre, visual, visual.output_dim, cfg.feature_dim)
        _freeze(encoder.tower, cfg.freeze_encoder)
        return encoder
    raise ValueError(f"unknown image encoder {cfg.encoder!r}; choose cnn, resnet18 or clip")


def _freeze(module: nn.Module, frozen: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(not frozen)
