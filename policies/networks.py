"""Small building blocks shared by the reward model and IQL: an MLP and a CNN over camera frames.

The CNN takes frames as they come from a dataset or a robot, uint8 [B, H, W, 3] RGB, and converts
them inside the network (to float, /255, channels first), so an exported ONNX graph receives raw
frames and a robot computer does no preprocessing.
"""

from __future__ import annotations

import torch
from torch import nn


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """Linear-ReLU layers of widths ``hidden``, then a linear layer to ``out_dim``."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class ImageEncoder(nn.Module):
    """uint8 [B, H, W, 3] -> float [B, ``out_dim``].

    Conv 3x3 stride 2 + ReLU per entry of ``channels`` (each halves H and W), adaptive average
    pooling to 4x4 (any input size; a 4x4 grid keeps where things are, which a global average
    would lose), flatten, linear to ``out_dim``, LayerNorm (keeps feature scale fixed for the
    heads, as DrQ-v2's encoder projection does).
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 32, 32), out_dim: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        width = 3
        for c in channels:
            layers += [nn.Conv2d(width, c, 3, stride=2, padding=1), nn.ReLU()]
            width = c
        self.conv = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(width * 16, out_dim), nn.LayerNorm(out_dim))
        self.out_dim = out_dim

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # contiguous: torch.export otherwise specializes the batch size of a permuted uint8 input
        x = image.permute(0, 3, 1, 2).contiguous().float() / 255.0 - 0.5
        return self.head(self.conv(x))
