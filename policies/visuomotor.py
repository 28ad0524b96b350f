"""Visuomotor sequence policies: BESO or GCBC reading camera frames and proprioception.

An :class:`ObservationEncoder` turns each observation of the window into one observation token
of the causal transformer: the selected elements of the (normalized) ``observation.state``
concatenated with the features of every camera's frame (one image encoder per camera, or one
shared: ``tether.policies.image_encoders``). This is Diffusion Policy's observation encoding
(Chi et al., RSS 2023: per-camera ResNet-18 features concatenated with low-dimensional state) in
front of BESO's transformer (Reuss et al., RSS 2023); GCBC gets the same encoder, so the two
policies still differ only in their objective.

Goals: a task one-hot, a goal observation, a language embedding (``language_goals``), a goal
image, which the policy encodes with its own encoder of the goal camera (BESO's image goals on
CALVIN), or either of the last two (multimodal goals, MDT: Reuss et al., RSS 2024): the language
embedding is projected into the image encoder's feature space, and each training sample is
conditioned on its goal image or its language goal at random, so that one policy follows
whichever it is given. MDT's auxiliary losses (contrastive alignment of the two goal kinds, masked
foresight) are not part of it.

Auxiliary pose regression (``ObservationConfig.aux_state_dims``, training only): a linear head
from the camera features to chosen ``observation.state`` elements, e.g. the objects' and goal's
positions a simulator knows, as Levine, Finn et al. (JMLR 2016) pre-train their encoder; the
exported policy does not contain it and reads only what ``state_dims`` and the cameras give.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from tether.policies.beso import Beso
from tether.policies.configs import BesoConfig, ObservationConfig
from tether.policies.gcbc import Gcbc
from tether.policies.image_encoders import build_image_encoder


def camera_key(name: str) -> str:
    """``corner`` -> ``observation.images.corner``; a full feature key is returned as is."""
    return name if name.startswith("observation.") else f"observation.images.{name}"


def state_dims(cfg: ObservationConfig, state_dim: int) -> tuple[int, ...]:
    """The ``observation.state`` elements the policy reads.

    Raises:
        ValueError: a dim outside the state, a repeated dim, or an empty selection.
    """
    dims = tuple(range(state_dim)) if cfg.state_dims is None else tuple(cfg.state_dims)
    bad = [d for d in dims if not 0 <= d < state_dim]
    if bad:
        raise ValueError(f"--obs.state-dims {bad} lie outside observation.state ({state_dim} elements)")
    if len(set(dims)) != len(dims):
        raise ValueError(f"--obs.state-dims {list(dims)} repeats an element")
    if not dims and not cfg.cameras:
        raise ValueError("--obs.state-dims selects nothing and no --obs.cameras are read: the policy would be blind")
    return dims


def aux_state_dims(cfg: ObservationConfig, state_dim: int) -> tuple[int, ...]:
    """The ``observation.state`` elements the camera features learn to predict in training
    (``ObservationConfig.aux_state_dims``).

    Raises:
        ValueError: a dim outside the state, a repeated dim, no cameras to learn them, or a
            negative or non-finite ``aux_weight``.
    """
    dims = tuple(cfg.aux_state_dims)
    if not dims:
        return dims
    bad = [d for d in dims if not 0 <= d < state_dim]
    if bad:
        raise ValueError(f"--obs.aux-state-dims {bad} lie outside observation.state ({state_dim} elements)")
    if len(set(dims)) != len(dims):
        raise ValueError(f"--obs.aux-state-dims {list(dims)} repeats an element")
    if not cfg.cameras:
        raise ValueError("--obs.aux-state-dims needs --obs.cameras: the camera features learn to predict them")
    if not (math.isfinite(cfg.aux_weight) and cfg.aux_weight >= 0):
        raise ValueError(f"--obs.aux-weight must be a finite number >= 0, got {cfg.aux_weight}")
    return dims


class ObservationEncoder(nn.Module):
    """Observation tokens from a window of states and camera frames.

    Args:
        cfg: what to read and how to encode frames.
        state_dim: S, the size of ``observation.state``.
        camera_shapes: camera key -> frame shape (H, W, 3), in the order the policy reads them.

    ``forward(state [B,T,S] normalized, frames [B,T,H,W,3] uint8 per camera, in order) ->
    [B,T,D]`` with D = ``out_dim`` = len(state dims) + cameras x ``cfg.feature_dim``.

    Raises:
        ValueError: bad state dims; a shared encoder over cameras of different sizes.
    """

    def __init__(self, cfg: ObservationConfig, state_dim: int, camera_shapes: dict[str, tuple[int, ...]]):
        super().__init__()
        self.cfg = cfg
        dims = state_dims(cfg, state_dim)
        self.register_buffer("state_dims", torch.as_tensor(dims, dtype=torch.long))
        self.cameras = list(camera_shapes)
        self.camera_shapes = {k: tuple(v) for k, v in camera_shapes.items()}
        sizes = {tuple(s[:2]) for s in camera_shapes.values()}
        if cfg.shared_encoder and len(sizes) > 1:
            raise ValueError(f"--obs.shared-encoder needs cameras of one size, got {self.camera_shapes}")
        if cfg.shared_encoder and self.cameras:
            shared = build_image_encoder(cfg, next(iter(sizes)))
            self.encoders = nn.ModuleList([shared])
        else:
            self.encoders = nn.ModuleList(build_image_encoder(cfg, tuple(s[:2])) for s in camera_shapes.values())
        self.out_dim = len(dims) + len(self.cameras) * cfg.feature_dim

    def encode_frames(self, camera: int, frames: torch.Tensor) -> torch.Tensor:
        """Features [N, F] of camera number ``camera``'s frames uint8 [N, H, W, 3]."""
        return self.encoders[0 if self.cfg.shared_encoder else camera](frames)

    def forward(self, state: torch.Tensor, frames: list[torch.Tensor]) -> torch.Tensor:
        b, t = state.shape[:2]
        parts = [state.index_select(2, self.state_dims)]
        for i, f in enumerate(frames):
            parts.append(self.encode_frames(i, f.reshape(b * t, *f.shape[2:])).view(b, t, -1))
        return torch.cat(parts, dim=-1)


class VisuomotorPolicy(nn.Module):
    """BESO or GCBC over :class:`ObservationEncoder` tokens.

    Args:
        kind: ``beso`` or ``gcbc``.
        cfg: BESO's settings (window T, action horizon H, network size, sampler).
        obs_cfg: what the policy reads.
        state_dim, action_dim: S, A.
        goal_dim: G of a task one-hot, goal observation or language embedding; ignored for image
            goals, whose features are the encoder's (``obs_cfg.feature_dim``).
        camera_shapes: camera key -> (H, W, 3).
        goal_camera: for image goals, the camera whose encoder encodes the goal frame.
        task_embeddings: language goals: float [tasks, E] embeddings of the training tasks (kept
            with the weights so the export can hand them to the robot). With ``goal_camera`` too,
            the goals are multimodal: an image or a language goal (``multimodal``).
        image_goal_prob: multimodal goals: the share of training samples conditioned on their
            goal image (the others on their language goal).

    With ``obs_cfg.aux_state_dims``, ``aux_head`` (training only) maps the camera features
    [B,T,cameras x F] to those state elements (module docstring).

    Methods take ``frames``: a dict camera key -> uint8 [B,T,H,W,3], and for image goals
    ``goal_image`` uint8 [B,H,W,3] in place of ``goal``; multimodal goals take both (``goal`` the
    language embedding [B,E]) and, at run time, ``goal_is_image`` float [B,1] (1: follow the image).
    """

    def __init__(self, kind: str, cfg: BesoConfig, obs_cfg: ObservationConfig, state_dim: int,
                 action_dim: int, goal_dim: int, camera_shapes: dict[str, tuple[int, ...]],
                 goal_camera: str | None = None, task_embeddings: torch.Tensor | None = None,
                 image_goal_prob: float = 0.5):
        super().__init__()
        if kind not in ("beso", "gcbc"):
            raise ValueError(f"a visuomotor policy is beso or gcbc, not {kind!r}")
        self.kind = kind
        self.cfg = cfg
        self.obs_cfg = obs_cfg
        self.encoder = ObservationEncoder(obs_cfg, state_dim, camera_shapes)
        self.goal_camera = goal_camera
        if goal_camera is not None:
            if goal_camera not in camera_shapes:
                raise ValueError(f"goal camera {goal_camera} is not one of the policy's cameras "
                                 f"{list(camera_shapes)} (--goal.image-camera)")
            goal_dim = obs_cfg.feature_dim
        self.register_buffer("task_embeddings", task_embeddings if task_embeddings is not None else torch.zeros(0, 0))
        self.multimodal = goal_camera is not None and self.task_embeddings.numel() > 0
        self.image_goal_prob = image_goal_prob
        if self.multimodal:
            self.language_projection = nn.Linear(self.task_embeddings.shape[1], obs_cfg.feature_dim)
        self.policy = (Beso if kind == "beso" else Gcbc)(cfg, self.encoder.out_dim, action_dim, goal_dim)
        aux = aux_state_dims(obs_cfg, state_dim)
        # not persistent: checkpoints from before the auxiliary head load as they were
        self.register_buffer("aux_dims", torch.as_tensor(aux, dtype=torch.long), persistent=False)
        camera_features = len(self.encoder.cameras) * obs_cfg.feature_dim
        self.aux_head = nn.Linear(camera_features, len(aux)) if aux else None
        self.action_dim = action_dim
        self.length = self.policy.length
        self.state_dim = state_dim

    @property
    def net(self):
        """The transformer (its embeddings give the token sizes)."""
        return self.policy.net

    @property
    def image_keys(self) -> list[str]:
        return self.encoder.cameras

    def encode(self, obs: torch.Tensor, frames: dict[str, torch.Tensor] | list[torch.Tensor],
               goal: torch.Tensor | None, goal_image: torch.Tensor | None,
               goal_is_image: torch.Tensor | None = None):
        """(tokens [B,T,D], goal [B,G]) from a normalized state window, frames and the goal
        (multimodal goals: the image's features where ``goal_is_image`` [B,1] is 1, the projected
        language embedding where it is 0)."""
        ordered = [frames[k] for k in self.encoder.cameras] if isinstance(frames, dict) else list(frames)
        tokens = self.encoder(obs, ordered)
        if self.goal_camera is not None:
            image = self.encoder.encode_frames(self.encoder.cameras.index(self.goal_camera), goal_image)
            goal = image if not self.multimodal else (
                goal_is_image * image + (1 - goal_is_image) * self.language_projection(goal))
        return tokens, goal

    def loss(self, obs: torch.Tensor, actions: torch.Tensor, frames: dict[str, torch.Tensor],
             goal: torch.Tensor | None = None, goal_image: torch.Tensor | None = None,
             generator: torch.Generator | None = None, action_pad: torch.Tensor | None = None) -> torch.Tensor:
        """The BESO or GCBC loss (see those classes) on encoded observations: obs [B,T,S]
        normalized, actions [B,L,A] normalized, frames per camera uint8 [B,T,H,W,3]; multimodal
        goals: each sample follows its goal image with ``image_goal_prob``, else its language goal."""
        is_image = None
        if self.multimodal:
            is_image = (torch.rand(obs.shape[0], 1, generator=generator) < self.image_goal_prob).to(obs)
        tokens, goal = self.encode(obs, frames, goal, goal_image, is_image)
        loss = self.policy.loss(tokens, actions, goal, generator, action_pad)
        if self.aux_head is None:
            return loss
        target = obs.index_select(2, self.aux_dims)
        return loss + self.obs_cfg.aux_weight * F.mse_loss(self.predict_aux(tokens), target)

    def predict_aux(self, tokens: torch.Tensor) -> torch.Tensor:
        """The auxiliary head's prediction [B,T,len(aux dims)] of the normalized state elements
        ``obs_cfg.aux_state_dims`` from observation tokens [B,T,D] (their camera features).

        Raises:
            RuntimeError: the policy was built without auxiliary dims.
        """
        if self.aux_head is None:
            raise RuntimeError("this policy has no auxiliary head (--obs.aux-state-dims was empty)")
        return self.aux_head(tokens[..., self.encoder.state_dims.numel():])

    def act(self, obs: torch.Tensor, frames, goal: torch.Tensor | None, goal_image: torch.Tensor | None,
            noise: torch.Tensor | None = None, goal_is_image: torch.Tensor | None = None) -> torch.Tensor:
        """Normalized actions [B,L,A]: BESO's sampler from ``noise`` [B,K*L,A], or GCBC's regression.
        The frames are encoded once, before the denoising steps."""
        tokens, goal = self.encode(obs, frames, goal, goal_image, goal_is_image)
        if self.kind == "beso":
            return self.policy.sample(tokens, goal, noise)
        return self.policy(tokens, goal)
