"""Settings of tether's learners as plain dataclasses (no torch import), so the command line can
be built from them on a machine without torch."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class BesoConfig:
    """BESO settings (Reuss et al., RSS 2023; see ``tether.policies.beso``).

    Defaults follow the paper and DESIGN.md; the network size suits a CPU.
    """

    window: int = 2
    """T: observation history length and number of jointly denoised actions (the last is executed)."""
    d_model: int = 128
    """Transformer width."""
    n_layers: int = 4
    n_heads: int = 4
    dropout: float = 0.05
    sigma_data: float = 0.5
    sigma_min: float = 0.005
    sigma_max: float = 1.0
    sigma_loc: float = math.log(0.5)
    """Location of the log-logistic training noise density (natural log of sigma)."""
    sigma_scale: float = 0.5
    num_steps: int = 3
    """Denoising steps of the DDIM sampler."""
    goal_drop_prob: float = 0.1
    guidance_weight: float = 1.0
    """w in D = D_u + w (D_c - D_u); 1 samples the conditional model only."""


@dataclass
class TrainConfig:
    """Optimisation settings shared by tether's learners."""

    steps: int = 10_000
    """Gradient steps."""
    batch_size: int = 256
    lr: float = 3e-4
    """Peak learning rate of AdamW (linear warm-up, then cosine decay to 0)."""
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    """Decay of the exponential moving average of the weights used for evaluation and export."""
    grad_clip: float = 1.0
    """Maximum global gradient norm."""
    checkpoint_every: int = 2_000
    seed: int = 0
