"""Settings of tether's learners as plain dataclasses (no torch import), so the command line can
be built from them on a machine without torch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
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
    (Play-LMP: windows of 32 to 64 frames at 30 Hz), uniformly or, with ``gamma``, geometrically
    (OGBench's ``actor_geom_sample``); at run time the goal comes from the robot's
    ``observation.goal`` (the same layout as ``observation.state``).
    ``language``: the episode's task string embedded by open_clip's text tower
    (``ObservationConfig.clip_model``; BESO on CALVIN, Reuss et al. 2023; MDT, Reuss et al. 2024).
    ``image``: the episode's last frame of ``image_camera`` (a goal image), encoded by the
    policy's own image encoder; at run time ``tether eval --goal-image FILE``.
    ``multimodal``: a goal image or a language goal, one policy (MDT, Reuss et al., RSS 2024):
    each training sample follows one of the two at random (``image_goal_prob``); at run time
    ``--goal-image FILE`` or ``--goal-text TEXT``, and the episode's task string otherwise.
    """

    kind: Literal["task", "hindsight", "language", "image", "multimodal"] = "task"
    min_offset_s: float = 1.0
    """Hindsight: nearest goal (s ahead of the frame)."""
    max_offset_s: float = 2.0
    """Hindsight: farthest goal (s ahead); frames nearer the episode's end use its last frame."""
    gamma: float | None = None
    """Hindsight: None draws the offset uniformly from the range; a discount 0 < gamma < 1 (per
    frame) draws min_offset - 1 + Geometric(1 - gamma) frames, capped at max_offset_s (mean
    1 / (1 - gamma) frames past min_offset - 1), as goal-conditioned RL samples future goals."""
    dims: tuple[int, ...] = ()
    """Hindsight: the ``observation.state`` elements a goal specifies (e.g. the objects' poses,
    not the arm's); default all."""
    image_camera: str | None = None
    """Image goals: the camera of the goal frame; default the policy's first camera."""
    text_weights: str | None = None
    """Language goals: open_clip pretrained tag or local checkpoint of the text tower; None:
    random weights (the task strings still get distinct embeddings; what tests use)."""
    image_goal_prob: float = 0.5
    """Multimodal goals: the share of training samples conditioned on their goal image."""


@dataclass
class ObservationConfig:
    """What a sequence policy (BESO, GCBC) reads of each observation: elements of
    ``observation.state`` and, for a visuomotor policy, camera frames through an image encoder
    (``tether.policies.image_encoders``; the recipe of Diffusion Policy, Chi et al., RSS 2023:
    ResNet-18 with GroupNorm per camera, random crop of ~90% in training, centre crop at run time).
    """

    state_dims: tuple[int, ...] | None = None
    """Elements of ``observation.state`` the policy reads (None: all). E.g. MetaWorld's arm
    (hand xyz and gripper, now and one frame before: 0 1 2 3 18 19 20 21) leaves the objects to
    the cameras, as a real robot has no object state."""
    cameras: tuple[str, ...] = ()
    """Camera features to read, e.g. ``observation.images.corner`` (a bare name such as ``corner``
    means ``observation.images.corner``); empty: a state-only policy."""
    encoder: Literal["cnn", "resnet18", "clip"] = "cnn"
    """cnn: a small convolutional encoder (fast on a CPU); resnet18: torchvision's ResNet-18 with
    GroupNorm (Diffusion Policy); clip: open_clip's image tower (``clip_model``)."""
    shared_encoder: bool = False
    """One encoder for every camera instead of one per camera."""
    image_size: int | None = None
    """Frames are resized (bilinear, in the graph) to image_size x image_size first; None: the
    camera's size (the clip encoder always resizes to its tower's input size)."""
    crop: float = 0.9
    """Side of the crop as a share of the (resized) frame: random in training, centred at run time
    (and in the exported graph); 1: no crop."""
    color_jitter: float = 0.0
    """Training only: brightness and contrast scaled by a factor in [1 - j, 1 + j] per frame."""
    feature_dim: int = 64
    """Features per camera (the encoder's output, after a linear projection and LayerNorm)."""
    channels: tuple[int, ...] = (32, 64, 64, 64)
    """cnn: channels of its 3x3 stride-2 convolutions."""
    weights: str | None = None
    """resnet18: a local state-dict file, or ``imagenet`` (torchvision's IMAGENET1K_V1, fetched by
    torchvision once); clip: an open_clip pretrained tag or a local checkpoint file. None: random
    initialization."""
    clip_model: str = "ViT-S-32"
    """open_clip architecture of the clip encoder and of language goals' text tower."""
    freeze_encoder: bool = False
    """Keep the image encoder's pre-trained weights fixed (its projection still trains)."""
    aux_state_dims: tuple[int, ...] = ()
    """Training only: elements of ``observation.state`` the camera features learn to predict
    (a linear head, mean squared error on normalized values, weight ``aux_weight``): the pose
    regression Levine, Finn et al. (JMLR 2016) pre-train their visuomotor encoder with.
    In simulation the objects' and goal's poses teach the encoders where those are; the policy
    never reads them, so what it is deployed with stays pixels + proprioception. Empty: none."""
    aux_weight: float = 1.0
    """Weight of the auxiliary loss beside BESO's (or GCBC's)."""


@dataclass
class TrainConfig:
    """Optimisation settings shared by tether's learners."""

    steps: int = 10_000
    """Gradient steps."""
    batch_size: int = 256
    lr: float = 3e-4
    """Peak learning rate of AdamW (linear warm-up, then ``lr_schedule``)."""
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    """After warm-up: cosine decay to 0 at the last step, or constant (OGBench's reference agents
    train at a constant 3e-4, the schedule to match when comparing with their numbers)."""
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    """Decay of the exponential moving average of the weights used for evaluation and export."""
    grad_clip: float = 1.0
    """Maximum global gradient norm."""
    checkpoint_every: int = 2_000
    seed: int = 0
    device: str = "auto"
    """Where to train: ``auto`` (a CUDA GPU when torch sees one, else the CPU), ``cpu``, ``cuda``
    or ``cuda:N``. Under ``torchrun`` on GPUs each process takes ``cuda:LOCAL_RANK``."""


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
class SuccessClassifierConfig:
    """Success classifier settings (a reward from camera frames: SERL, Luo et al., ICRA 2024;
    RoboFuME, Yang et al., ICRA 2024; see ``tether.policies.success_classifier``)."""

    camera: str | None = None
    """Camera (video feature) to classify; default: the dataset's first."""
    positive_frames: int = 5
    """The last frames of each successful episode that count as success (with every frame whose
    ``next.success`` is set): episodes that end at success hold only one such frame."""
    ignore_frames: int = 20
    """Frames just before those positives, left out: they look like success but are not labelled so."""
    channels: tuple[int, ...] = (16, 32, 32, 32)
    """CNN channels; each layer halves the image (stride 2)."""
    hidden: tuple[int, ...] = (64,)
    """Head widths after the CNN's 64 features."""
    shift_pixels: int = 4
    """Random-shift augmentation (DrQ: pad by this many pixels, crop back at a random offset)."""
    threshold: float = 0.75
    """Success when P(success) >= threshold: false positives are rewards for nothing, so the bar
    is above 0.5."""
    val_fraction: float = 0.2
    """Share of episodes held out for the report."""
    steps: int = 2_000
    batch_size: int = 64
    """Frames per step, half positives and half negatives."""
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
    reward_normalization: Literal["below_max", "standardize", "none"] = "below_max"
    """below_max: (r - max) / std over the dataset, so no step's reward is positive and the best
    is 0 (a learned reward's offset and scale are arbitrary; with success as terminal, a positive
    reward near success would make ending the episode a loss: the policy learns to hover next to
    the goal, which is what MetaWorld's dense reward does to IQL on drawer-open). standardize:
    (r - mean) / std."""
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
    state_dims: tuple[int, ...] | None = None
    """Elements of ``observation.state`` the networks read (None: all). With a camera, the
    proprioceptive ones (e.g. MetaWorld's hand position and gripper, 0 1 2 3) leave the scene to
    the image, as image-based robot RL does."""
    camera: str | None = None
    """Camera for ``encoder=image``; default: the dataset's first."""
    channels: tuple[int, ...] = (16, 32, 32, 32)
    """CNN channels of the image encoder (stride 2 each)."""
    encoder_init: Path | None = None
    """``encoder.pt`` of ``tether pretrain-value`` (ICVF on video, V-PTR): initial weights of the
    image encoder (``encoder=image``); its channels and frame size must match."""
    freeze_encoder: bool = False
    """With ``encoder_init``: keep the pre-trained encoder fixed instead of fine-tuning it."""


@dataclass
class GciqlConfig:
    """Goal-conditioned IQL settings (OGBench's reference ``impls/agents/gciql.py``, Park et al.,
    "OGBench: Benchmarking Offline Goal-Conditioned RL", ICLR 2025; defaults are its
    ``get_config()`` with the ``--agent.alpha=1.0`` of its cube-single-play and scene-play runs;
    see ``tether.policies.gciql``)."""

    expectile: float = 0.9
    """tau of the expectile regression of V(s, g) onto min(Q1', Q2')(s, a, g)."""
    discount: float = 0.99
    """gamma of the TD target and of the geometric future-goal offsets."""
    tau: float = 0.005
    """Polyak rate of the target critics (after every optimizer step)."""
    actor_loss: Literal["ddpgbc", "awr"] = "ddpgbc"
    """ddpgbc: -Q(s, g, mu(s, g)) / mean|Q| + alpha * BC (OGBench's default); awr: advantage-
    weighted regression, weights exp(alpha * A) clipped at 100."""
    alpha: float = 1.0
    """BC coefficient (ddpgbc) or inverse temperature (awr); OGBench's cube and scene runs: 1.0."""
    hidden: tuple[int, ...] = (512, 512, 512)
    """Widths of the value, critic and actor MLPs (GELU; LayerNorm in value and critics)."""
    layer_norm: bool = True
    """LayerNorm after every hidden layer of the value and the critics."""
    value_p_curgoal: float = 0.2
    """Share of value goals that are the state itself (reward 0, no bootstrap)."""
    value_p_trajgoal: float = 0.5
    """Share of value goals from later states of the same episode."""
    value_p_randomgoal: float = 0.3
    """Share of value goals drawn from any state of the dataset."""
    value_geom_sample: bool = True
    """Future value goals at Geometric(1 - discount) offsets (else uniform up to the episode end)."""
    actor_p_curgoal: float = 0.0
    actor_p_trajgoal: float = 1.0
    actor_p_randomgoal: float = 0.0
    actor_geom_sample: bool = False
    """Future actor goals uniform over the rest of the episode (OGBench's default)."""


@dataclass
class IcvfConfig:
    """Intention-conditioned value function settings (ICVF: Ghosh, Bhateja, Levine, "Reinforcement
    Learning from Passive Data via Latent Intentions", ICML 2023; the values V-PTR uses, Bhateja,
    Ghosh et al. 2023; see ``tether.policies.icvf``)."""

    expectile: float = 0.9
    """tau of the expectile regression, weighted by the sign of the intent's advantage."""
    discount: float = 0.99
    """gamma of the TD target and of the geometric future-goal offsets."""
    tau: float = 0.005
    """Polyak rate of the target network (after every optimizer step)."""
    latent_dim: int = 64
    """d: size of phi(s) and psi(g); T(z) is a d x d matrix."""
    hidden: tuple[int, ...] = (256,)
    """Widths of the phi, psi and T MLP heads on the image features."""
    channels: tuple[int, ...] = (16, 32, 32, 32)
    """CNN channels of the image encoder (stride 2 each); IQL's ``channels`` must match to reuse it."""
    feature_dim: int = 64
    """Output width of the image encoder (IQL's image encoder has 64)."""
    image_size: int | None = None
    """Frames are resized to image_size x image_size (OpenCV). None: a dataset camera keeps its
    own size; videos become 64 x 64."""
    p_random: float = 0.3
    """Share of goals and intents drawn from any frame of the training episodes."""
    p_future: float = 0.5
    """Share drawn from later frames of the same episode (geometric offsets with ``discount``)."""
    p_current: float = 0.2
    """Share that is the frame itself (reward 0, no bootstrap)."""
    val_fraction: float = 0.1
    """Share of episodes held out for the value report (at least one)."""


@dataclass
class SacConfig:
    """Soft actor-critic with a critic ensemble (Haarnoja et al., 2018; the ensemble, LayerNorm
    and random-subset minimum of RLPD, Ball et al., ICML 2023, and WSRL, Zhou et al., ICLR 2025;
    see ``tether.policies.sac``)."""

    hidden: tuple[int, ...] = (128, 128)
    """Widths of the actor's and every critic's MLP (the papers use 256; 128 keeps an update of
    10 critics near 20 ms on one CPU core, so UTD 4 keeps up with a 10 Hz robot)."""
    critics: int = 10
    """Critic ensemble size E (RLPD, WSRL: 10)."""
    subset: int = 2
    """Target critics the TD target takes the minimum over, drawn at random per update (RLPD: 2
    of 10); ``subset == critics`` is clipped double Q over all."""
    layer_norm: bool = True
    """LayerNorm after every hidden layer of the critics (RLPD: limits Q extrapolation)."""
    discount: float = 0.99
    tau: float = 0.005
    """Polyak rate of the target critics (after every optimizer step)."""
    init_temperature: float = 1.0
    """Initial entropy temperature alpha (learned to reach ``target_entropy``)."""
    target_entropy: float | None = None
    """Entropy the temperature is tuned for; default -A/2 (RLPD, WSRL; SAC's -A is stricter)."""
    backup_entropy: bool = True
    """Subtract alpha log pi(a'|s') in the TD target (soft Q-learning)."""
    actor_every: int = 1
    """Actor and temperature updated on one ``loss`` call in this many (RLPD: once per env step,
    i.e. ``utd``); critics every call."""
    utd: int = 4
    """Update-to-data ratio: gradient updates per environment transition (WSRL: 4; RLPD: 20)."""


@dataclass
class CalQlConfig:
    """Calibrated Q-learning (Nakamoto et al., "Cal-QL: Calibrated Offline RL Pre-Training for
    Efficient Online Fine-Tuning", NeurIPS 2023; see ``tether.policies.calql``): CQL on top of SAC
    whose pushed-down Q-values are clipped from below by the data's Monte-Carlo return-to-go."""

    sac: SacConfig = field(default_factory=lambda: SacConfig(critics=2, subset=2))
    """The SAC underneath (Cal-QL: twin critics; WSRL pre-trains with ``critics 10``; ``utd``
    is for fine-tuning)."""
    alpha: float = 5.0
    """Weight of the CQL regularizer (Cal-QL's manipulation and AntMaze settings: 5)."""
    actions: int = 10
    """Sampled actions per state for the log-sum-exp (each: uniform, pi(.|s), pi(.|s'))."""
    temperature: float = 1.0
    """CQL temperature of the log-sum-exp."""
    calibrated: bool = True
    """Clip Q(s, a~pi) from below by the Monte-Carlo return (Cal-QL); False: plain CQL."""
    mc_tail: Literal["repeat", "zero"] = "repeat"
    """Return-to-go after a truncated episode's last frame: ``repeat`` its reward forever
    (r / (1 - gamma), Cal-QL's treatment of unfinished sparse-reward episodes) or ``zero``."""


@dataclass
class OnlineConfig:
    """Online fine-tuning on a robot (``tether finetune``; ``tether.policies.learner``).

    wsrl: warm-up with the frozen pre-trained policy, then SAC from online data only (Zhou et al.,
    ICLR 2025). rlpd: SAC with every batch half offline data, half online (Ball et al., ICML 2023).
    calql: Cal-QL's objective continued online, half offline data (Nakamoto et al., 2023).
    """

    algo: Literal["wsrl", "rlpd", "calql"] = "wsrl"
    warmup_steps: int = 5_000
    """WSRL: transitions collected with the frozen pre-trained policy before any update."""
    offline_ratio: float = 0.5
    """Share of each batch drawn from the offline (and intervention) buffer: rlpd and calql;
    wsrl keeps no offline data (0)."""
    utd: int | None = None
    """Update-to-data ratio: gradient updates per online transition after the warm-up; default the
    checkpoint's ``SacConfig.utd`` (4, WSRL's; RLPD uses 20 where compute allows)."""
    batch_size: int = 256
    lr: float = 3e-4
    capacity: int = 1_000_000
    """Online replay buffer size (transitions; the oldest are overwritten)."""
    publish_every: int = 500
    """Gradient updates between weight versions sent to the actor (ONNX)."""
    intervention_penalty: float = 0.0
    """RLIF (Luo et al., 2023): reward added on a transition where a human took over (e.g. -1);
    0 keeps the task reward."""
    intervention_demos: bool = True
    """HIL-SERL: also store intervention transitions in the offline (demo) buffer."""
    seed: int = 0
