"""Settings of tether's learners as plain dataclasses (no torch import), so the command line can
be built from them on a machine without torch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass
class BesoConfig:
    """BESO settings (Reuss et al., RSS 2023; see ``tether.policies.beso``).

    Defaults follow the paper and DESIGN.md; the network size suits a CPU.
    """

    window: int = 2
    """T: observation history length and number of jointly denoised actions (the last is executed)."""
    action_horizon: int = 1
    """H: actions predicted from the current observation on (an action chunk; 1: one action)."""
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
    """Denoising steps of the sampler."""
    sampler: Literal["ddim", "euler_ancestral"] = "ddim"
    """DDIM (deterministic given the initial noise) or Euler-ancestral (fresh noise each step)."""
    schedule: Literal["exponential", "linear"] = "exponential"
    """Spacing of the sampler's noise levels between sigma_max and sigma_min."""
    goal_drop_prob: float = 0.1
    guidance_weight: float = 1.0
    """w in D = D_u + w (D_c - D_u); 1 samples the conditional model only."""


@dataclass
class GoalConfig:
    """What conditions a goal-conditioned policy (BESO, GCBC).

    ``task``: a one-hot of the episode's task string (demonstrations of named tasks).
    ``hindsight``: a later ``observation.state`` of the same episode (play data: hindsight goal
    relabelling, Play-LMP, Lynch et al. 2019), at ``min_offset_s`` to ``max_offset_s`` ahead
    (Play-LMP: windows of 32 to 64 frames at 30 Hz); at run time the goal comes from the robot's
    ``observation.goal`` (the same layout as ``observation.state``).
    """

    kind: Literal["task", "hindsight"] = "task"
    min_offset_s: float = 1.0
    """Hindsight: nearest goal (s ahead of the frame)."""
    max_offset_s: float = 2.0
    """Hindsight: farthest goal (s ahead); frames nearer the episode's end use its last frame."""
    dims: tuple[int, ...] = ()
    """Hindsight: the ``observation.state`` elements a goal specifies (e.g. the objects' poses,
    not the arm's); default all."""


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


@dataclass
class RewardModelConfig:
    """Bradley-Terry reward model settings (RL-VLM-F: Wang et al., ICML 2024; see
    ``tether.policies.reward_model``)."""

    ensemble: int = 3
    """Members, each from its own initialization and minibatches; the reward is their mean."""
    input: Literal["state", "image"] = "state"
    """What a member scores: ``observation.state`` (MLP) or a camera frame (small CNN)."""
    camera: str | None = None
    """Camera (video feature) for ``input=image``; default: the labels' camera, else the first."""
    hidden: tuple[int, ...] = (256, 256)
    """MLP widths (the state network, and the image network's head)."""
    channels: tuple[int, ...] = (16, 32, 32, 32)
    """CNN channels; each layer halves the image (stride 2)."""
    unsure: Literal["skip", "half"] = "skip"
    """Label -1 ("no difference"/"unsure"): skipped, as RL-VLM-F does, or a 0.5 target."""
    val_fraction: float = 0.2
    """Share of labelled pairs held out for the accuracy report."""
    steps: int = 2_000
    batch_size: int = 64
    """Pairs per member per step."""
    lr: float = 3e-4
    weight_decay: float = 1e-4
    seed: int = 0


@dataclass
class IqlConfig:
    """Implicit Q-learning settings (Kostrikov et al., "Offline Reinforcement Learning with Implicit
    Q-Learning", ICLR 2022; values of RL-VLM-F's offline follow-up, Venkataraman et al., 2024)."""

    expectile: float = 0.7
    """tau of the expectile regression of V onto Q."""
    beta: float = 3.0
    """Inverse temperature of the advantage-weighted actor: weight exp(beta * A)."""
    max_weight: float = 100.0
    """Clip of the advantage weights."""
    discount: float = 0.99
    tau: float = 0.005
    """Polyak rate of the target critics (after every optimizer step)."""
    hidden: tuple[int, ...] = (256, 256)
    """Widths of the Q, V and actor MLPs."""
    actor: Literal["gaussian", "deterministic"] = "gaussian"
    """Gaussian (tanh-squashed mean, state-independent log-std; weighted log-likelihood) or
    deterministic (weighted squared error). Both export the mean action."""
    reward: str = "next.reward"
    """Reward column: ``next.reward``, a relabelled ``reward.<name>``, or ``constant`` (every
    transition 0: advantages vanish and IQL reduces to behaviour cloning; a control)."""
    reward_normalization: Literal["standardize", "none"] = "standardize"
    """standardize: (r - mean) / std over the dataset (a learned reward's scale is arbitrary)."""
    reward_shift: float = -1.0
    """Added after normalization. With success as terminal every step then costs, so ending the
    episode by success is attractive (IQL's AntMaze recipe subtracts 1 likewise); with no
    terminals a constant shift changes no advantage."""
    terminal: Literal["success", "none"] = "success"
    """success: a transition whose ``next.success`` is true ends the episode (tether's MetaWorld
    driver terminates on success); every other episode end is a time-limit truncation and its last
    frame only serves as a next observation. none: no transition is terminal."""
    encoder: Literal["state", "image"] = "state"
    """Input: ``observation.state``, or a camera frame (CNN shared by Q and V; the actor reads
    its features detached) next to the state."""
    camera: str | None = None
    """Camera for ``encoder=image``; default: the dataset's first."""
    channels: tuple[int, ...] = (16, 32, 32, 32)
    """CNN channels of the image encoder (stride 2 each)."""
