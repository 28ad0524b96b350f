"""ONNX export of trained policies, with everything a robot needs in the model's metadata.

The exported graph holds the whole policy: input normalization, the network (for BESO every
denoising step of the sampler, and classifier-free guidance when w != 1), action un-normalization
and clipping to the robot's limits. Noise is an input, so a run is reproducible and torch/ONNX parity is testable.
Metadata (ONNX ``metadata_props``): ``tether.spec`` (the robot spec the policy was trained for)
and ``tether.policy`` (kind, window, action horizon, noise length, sampler, steps, guidance weight,
goal encoding, normalization statistics, parameter count), both JSON.

Outputs: ``action`` [B,A], the action to apply now; sequence policies (BESO, GCBC) also give
``actions`` [B,H,A], the action chunk from now on (H = the action horizon), for
``RobotClient.send_chunk`` and temporal ensembling.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tether.policies.beso import Beso, noise_draws
from tether.policies.data import Normalizer
from tether.policies.gcbc import Gcbc
from tether.policies.visuomotor import VisuomotorPolicy
from tether.robot.spec import RobotSpec

OPSET = 18


class _Graph(nn.Module):
    """Normalization in and out of a policy network, and clipping to the robot's action limits."""

    def __init__(self, model: nn.Module, normalizer: Normalizer, spec: RobotSpec,
                 goal_dims: tuple[int, ...] | None = None):
        super().__init__()
        self.model = model
        f32 = torch.float32
        # Observation goals: the raw goal observation [B,S] -> its ``goal_dims``, z-scored like the
        # observations they are compared with. Task goals (one-hot) pass through.
        self.observation_goal = goal_dims is not None
        dims = torch.as_tensor(list(goal_dims or ()), dtype=torch.long)
        self.register_buffer("goal_dims", dims)
        self.register_buffer("goal_mean", torch.as_tensor(normalizer.obs_mean, dtype=f32)[dims])
        self.register_buffer("goal_std", torch.as_tensor(normalizer.obs_std, dtype=f32)[dims])
        self.register_buffer("obs_mean", torch.as_tensor(normalizer.obs_mean, dtype=f32))
        self.register_buffer("obs_std", torch.as_tensor(normalizer.obs_std, dtype=f32))
        self.register_buffer("act_center", torch.as_tensor(normalizer.action_center, dtype=f32))
        self.register_buffer("act_half", torch.as_tensor(normalizer.action_half_range, dtype=f32))
        low = spec.action.low or (-np.inf,) * spec.action.shape[0]
        high = spec.action.high or (np.inf,) * spec.action.shape[0]
        self.register_buffer("low", torch.tensor(low, dtype=f32))
        self.register_buffer("high", torch.tensor(high, dtype=f32))

    def _goal(self, goal: torch.Tensor) -> torch.Tensor:
        if not self.observation_goal:
            return goal
        return (goal.index_select(1, self.goal_dims) - self.goal_mean) / self.goal_std

    def _out(self, normalized_action: torch.Tensor) -> torch.Tensor:
        action = normalized_action * self.act_half + self.act_center
        return torch.maximum(torch.minimum(action, self.high), self.low)


class BesoGraph(_Graph):
    """Raw observation window [B,T,S], goal [B,G], noise [B,K*L,A] -> (action [B,A],
    actions [B,H,A]) in robot units (L = T + H - 1; K = 1 for DDIM, steps + 1 for Euler-ancestral)."""

    def forward(self, obs: torch.Tensor, goal: torch.Tensor, noise: torch.Tensor):
        seq = self.model.sample((obs - self.obs_mean) / self.obs_std, self._goal(goal), noise)
        chunk = self._out(seq[:, obs.shape[1] - 1 :])
        return chunk[:, 0], chunk


class GcbcGraph(_Graph):
    """Raw observation window [B,T,S], goal [B,G] -> (action [B,A], actions [B,H,A])."""

    def forward(self, obs: torch.Tensor, goal: torch.Tensor):
        seq = self.model((obs - self.obs_mean) / self.obs_std, self._goal(goal))
        chunk = self._out(seq[:, obs.shape[1] - 1 :])
        return chunk[:, 0], chunk


def visuomotor_goal_inputs(model: VisuomotorPolicy) -> list[str]:
    """The goal inputs of a visuomotor graph: ``goal`` [B,G] (a task one-hot or language
    embedding), ``goal_image`` uint8 [B,H,W,3], or for multimodal goals all of ``goal`` (the
    language embedding), ``goal_image`` and ``goal_is_image`` float [B,1] (1: follow the image)."""
    if model.multimodal:
        return ["goal", "goal_image", "goal_is_image"]
    return ["goal_image"] if model.goal_camera is not None else ["goal"]


class VisuomotorGraph(_Graph):
    """Raw observation window [B,T,S], the goal inputs (``visuomotor_goal_inputs``), for BESO
    noise [B,K*L,A], then each camera's frames uint8 [B,T,H,W,3] (inputs named by the camera keys)
    -> (action [B,A], actions [B,H,A]). Resizing, centre crop and normalization of the frames are
    in the graph (``tether.policies.image_encoders``); GCBC has no noise input."""

    def forward(self, obs: torch.Tensor, *inputs: torch.Tensor):
        goals = dict(zip(visuomotor_goal_inputs(self.model), inputs))
        rest = inputs[len(goals):]
        noise, frames = (rest[0], rest[1:]) if self.model.kind == "beso" else (None, rest)
        goal = goals.get("goal")
        seq = self.model.act((obs - self.obs_mean) / self.obs_std, list(frames),
                             None if goal is None else self._goal(goal), goals.get("goal_image"), noise,
                             goals.get("goal_is_image"))
        chunk = self._out(seq[:, obs.shape[1] - 1 :])
        return chunk[:, 0], chunk


class MlpGraph(_Graph):
    """Raw observation window [B,1,S], goal [B,G] (task one-hot, or the raw goal observation
    [B,S] with ``goal_dims``) -> action [B,A] in robot units."""

    def forward(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        # observation goals (GCIQL) are z-scored like the states; task one-hots pass through
        return self._out(self.model((obs - self.obs_mean) / self.obs_std, self._goal(goal)))


class ImageMlpGraph(_Graph):
    """Raw observation window [B,1,S], goal [B,G], camera frame uint8 [B,H,W,3] -> action [B,A].

    For policies with ``image_keys`` (IQL / BC with an image encoder); the frame's ONNX input is
    named by its feature key (e.g. ``observation.images.front``), and the network converts it.
    """

    def forward(self, obs: torch.Tensor, goal: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self._out(self.model((obs - self.obs_mean) / self.obs_std, goal, image))


class NoisyMlpGraph(_Graph):
    """Raw observation window [B,1,S], goal [B,G], noise [B,1,A] -> action [B,A]: a stochastic
    policy sampled inside the graph (``model.noise_input``, e.g. SAC's exploration policy), its
    standard-normal noise drawn by the runner, so the robot explores with no torch."""

    def forward(self, obs: torch.Tensor, goal: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self._out(self.model((obs - self.obs_mean) / self.obs_std, goal, noise))


class CriticGraph(_Graph):
    """Raw observation window [B,1,S], raw goal observation [B,S] (its ``goal_dims`` used),
    action [B,A] in robot units -> Q [B]: a critic ``model(obs, goal, action)`` on normalized
    inputs (the action scaled to [-1, 1] as in training), for value-guided sampling."""

    def forward(self, obs: torch.Tensor, goal: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        normalized = ((action - self.act_center) / self.act_half).clamp(-1.0, 1.0)
        return self.model((obs - self.obs_mean) / self.obs_std, self._goal(goal), normalized)


SEQUENCE_POLICIES = (Beso, Gcbc, VisuomotorPolicy)


def _graph_class(model: nn.Module) -> type[_Graph]:
    if isinstance(model, VisuomotorPolicy):
        return VisuomotorGraph
    if isinstance(model, Beso):
        return BesoGraph
    if isinstance(model, Gcbc):
        return GcbcGraph
    if getattr(model, "noise_input", False):
        return NoisyMlpGraph
    return ImageMlpGraph if getattr(model, "image_keys", ()) else MlpGraph


def goal_metadata(tasks: list[str], goal_dims: tuple[int, ...] | None, model: nn.Module | None = None) -> dict:
    """How the runner fills the goal input: a one-hot of the episode's task, the robot's
    ``observation.goal`` (the graph selects ``dims`` and normalizes them), a language embedding
    (the training tasks' embeddings are listed; ``clip_model`` makes new ones), a goal image
    (``goal_image`` input, the goal camera's frame shape), or either (``multimodal``: both
    entries' fields, and ``goal_is_image`` says which the graph follows)."""
    image = language = {}
    if isinstance(model, VisuomotorPolicy) and model.goal_camera is not None:
        image = {"kind": "image", "camera": model.goal_camera,
                 "shape": list(model.encoder.camera_shapes[model.goal_camera]), "tasks": list(tasks)}
    if isinstance(model, VisuomotorPolicy) and model.task_embeddings.numel():
        language = {"kind": "text_embedding", "tasks": list(tasks), "clip_model": model.obs_cfg.clip_model,
                    "embeddings": model.task_embeddings.tolist()}
    if image or language:
        return {**image, **language, "kind": "multimodal"} if image and language else image or language
    if goal_dims is None:
        return {"kind": "task_one_hot", "tasks": list(tasks)}
    return {"kind": "observation", "key": "observation.goal", "dims": list(goal_dims),
            "tasks": list(tasks)}


def policy_metadata(model: nn.Module, normalizer: Normalizer, tasks: list[str],
                    goal_dims: tuple[int, ...] | None = None) -> dict:
    """The ``tether.policy`` metadata dict of an exported policy."""
    kinds = {Beso: "beso", Gcbc: "gcbc"}
    meta = {
        # MlpPolicy is "mlp"; IQL and BC actors, visuomotor policies say what they are
        "kind": kinds.get(type(model)) or getattr(model, "kind", "mlp"),
        "window": model.cfg.window if isinstance(model, SEQUENCE_POLICIES) else model.window,
        "goal": goal_metadata(tasks, goal_dims, model),
        "normalization": normalizer.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if getattr(model, "image_keys", ()):
        meta["images"] = list(model.image_keys)
    if isinstance(model, VisuomotorPolicy):
        # frames come as a window [B, T, H, W, 3] like the state
        meta["image_window"] = True
        meta["observation"] = {"state_dims": model.encoder.state_dims.tolist(), "encoder": model.obs_cfg.encoder}
    if isinstance(model, SEQUENCE_POLICIES):
        meta["action_horizon"] = model.cfg.action_horizon
    if getattr(model, "noise_input", False):  # samples its actions: N(0, I) noise [B, 1, A]
        meta.update(noise_length=1, stochastic=True)
    beso = model.policy if isinstance(model, VisuomotorPolicy) and model.kind == "beso" else model
    if isinstance(beso, Beso):
        meta.update(
            num_steps=model.cfg.num_steps, sampler=model.cfg.sampler, schedule=model.cfg.schedule,
            guidance_weight=model.cfg.guidance_weight,
            noise_length=noise_draws(beso.cfg) * beso.length,
        )
    return meta


def _example_inputs(model: nn.Module, normalizer: Normalizer, spec: RobotSpec, goal_dim: int):
    """(names, zero tensors) of the graph's inputs, batch 1 (``goal_dim``: the goal input's size:
    the task count, or the observation size for observation goals)."""
    window = model.cfg.window if isinstance(model, SEQUENCE_POLICIES) else model.window
    s, a = normalizer.obs_mean.shape[0], spec.action.shape[0]
    if isinstance(model, VisuomotorPolicy):
        return _visuomotor_inputs(model, s, a, goal_dim)
    example = [torch.zeros(1, window, s), torch.zeros(1, goal_dim)]
    names = ["obs", "goal"]
    if isinstance(model, Beso):
        example.append(torch.zeros(1, noise_draws(model.cfg) * model.length, a))
        names.append("noise")
    elif getattr(model, "noise_input", False):
        example.append(torch.zeros(1, 1, a))
        names.append("noise")
    for key in getattr(model, "image_keys", ()):
        example.append(torch.zeros(1, *spec.observation[key].shape, dtype=torch.uint8))
        names.append(key)
    return names, example


def _visuomotor_inputs(model: VisuomotorPolicy, s: int, a: int, goal_dim: int):
    """(names, zero tensors) of a visuomotor graph: obs, its goal inputs, noise (BESO), frames."""
    t = model.cfg.window
    shapes = model.encoder.camera_shapes
    zeros = {"goal": lambda: torch.zeros(1, goal_dim), "goal_is_image": lambda: torch.zeros(1, 1),
             "goal_image": lambda: torch.zeros(1, *shapes[model.goal_camera], dtype=torch.uint8)}
    names, example = ["obs"], [torch.zeros(1, t, s)]
    for name in visuomotor_goal_inputs(model):
        names.append(name)
        example.append(zeros[name]())
    if model.kind == "beso":
        names.append("noise")
        example.append(torch.zeros(1, noise_draws(model.cfg) * model.length, a))
    for key in model.image_keys:
        names.append(key)
        example.append(torch.zeros(1, t, *shapes[key], dtype=torch.uint8))
    return names, example


def export_policy(
    model: nn.Module, normalizer: Normalizer, spec: RobotSpec, tasks: list[str], path: Path,
    goal_dims: tuple[int, ...] | None = None,
) -> Path:
    """Export ``model`` (BESO, GCBC, MLP, IQL/BC actors; pass EMA weights) to ``path`` with tether
    metadata.

    Inputs: ``obs`` [B,T,S] raw observation window and ``goal`` [B,G]; BESO adds ``noise``
    [B,K*L,A] (see ``BesoGraph``); a policy with ``image_keys`` adds its camera frame uint8
    [B,H,W,3], the input named by the feature key. Outputs: ``action`` [B,A] in robot units, and
    for BESO/GCBC ``actions`` [B,H,A]. ``spec`` is the robot spec of the training data; only the
    features the policy reads are kept. ``goal_dims``: the policy is conditioned on observation
    goals (hindsight relabelling): ``goal`` is then the raw goal observation [B,S], of which the
    graph uses these elements. Returns ``path``.
    """
    model = model.eval()
    graph = _graph_class(model)(model, normalizer, spec, goal_dims).eval()
    goal_dim = _goal_input_dim(model, normalizer, tasks, goal_dims)
    names, example = _example_inputs(model, normalizer, spec, goal_dim)
    outputs = ["action", "actions"] if isinstance(model, SEQUENCE_POLICIES) else ["action"]
    images = tuple(getattr(model, "image_keys", ()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a visuomotor graph takes everything after obs as *inputs
    varargs = len(names) - 1 if isinstance(model, VisuomotorPolicy) else 0
    proto = onnx_program(graph, tuple(example), names, outputs, varargs)
    policy_spec = RobotSpec(
        spec.robot_type,
        spec.control_rate_hz,
        {"observation.state": spec.observation["observation.state"],
         **({} if goal_dims is None else {"observation.goal": spec.observation["observation.state"]}),
         **{key: spec.observation[key] for key in images}},
        spec.action,
        tasks=tuple(tasks),
    )
    meta = {
        "tether.spec": policy_spec.to_json(),
        "tether.policy": json.dumps(policy_metadata(model, normalizer, tasks, goal_dims)),
    }
    return save_onnx(proto, meta, path)


def _goal_input_dim(model: nn.Module, normalizer: Normalizer, tasks, goal_dims) -> int:
    """Size of the ``goal`` input: a language embedding's, the observation's (observation goals),
    or the task count."""
    if isinstance(model, VisuomotorPolicy) and model.task_embeddings.numel():
        return model.task_embeddings.shape[1]
    return len(tasks) if goal_dims is None else normalizer.obs_mean.shape[0]


def onnx_program(graph: nn.Module, example: tuple, names: list[str], outputs: list[str], varargs: int = 0):
    """``graph`` traced by torch.export and converted to an ONNX ``ModelProto`` (opset ``OPSET``),
    every input's first dimension a dynamic batch (1..4096). The last ``varargs`` inputs are the
    graph's variable positional ones (``*frames``)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    # positional, as names may be feature keys; torch.export wants *args as one nested tuple
    fixed = len(example) - varargs
    dynamic = tuple({0: batch} for _ in range(fixed)) + ((tuple({0: batch} for _ in range(varargs)),) if varargs else ())
    # The exporter logs every op library it does not find (torchvision, ...): not our concern.
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph,
                example,
                input_names=names,
                output_names=outputs,
                dynamic_shapes=dynamic,
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
    finally:
        onnx_log.setLevel(level)
    return program.model_proto


def save_onnx(proto, meta: dict[str, str], path: Path) -> Path:
    """Add ``meta`` to the model's ``metadata_props``, check the model, and write it atomically."""
    import onnx

    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    onnx.save(proto, tmp)
    tmp.replace(path)
    return path


export_beso = export_policy


def parity(
    model: nn.Module,
    normalizer: Normalizer,
    spec: RobotSpec,
    onnx_path: Path,
    tasks: int,
    n: int = 32,
    seed: int = 0,
    goal_dims: tuple[int, ...] | None = None,
) -> float:
    """Max absolute difference between the torch graph and the ONNX model, over every output, on
    ``n`` random inputs (observations drawn around the normalization statistics, ``tasks``
    one-hot goals, random camera frames, and for BESO the same noise in both)."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    goal_dim = _goal_input_dim(model, normalizer, range(tasks), goal_dims)
    language = isinstance(model, VisuomotorPolicy) and model.task_embeddings.numel() > 0
    names, example = _example_inputs(model, normalizer, spec, goal_dim)
    feed = {}
    for name, zero in zip(names, example):
        shape = (n, *zero.shape[1:])
        if name == "obs" or (name == "goal" and goal_dims is not None):
            value = normalizer.obs_mean + normalizer.obs_std * rng.standard_normal(shape)
        elif name == "goal" and language:
            value = model.task_embeddings.numpy()[rng.integers(0, tasks, n)]
        elif name == "goal":
            value = np.eye(tasks)[rng.integers(0, tasks, n)]
        elif name == "goal_is_image":
            value = rng.integers(0, 2, shape)
        elif zero.dtype == torch.uint8:
            value = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            value = rng.standard_normal(shape)
        feed[name] = value if value.dtype == np.uint8 else value.astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, feed)
    graph = _graph_class(model)(model, normalizer, spec, goal_dims).eval()
    with torch.no_grad():
        torch_out = graph(*(torch.from_numpy(v) for v in feed.values()))
    torch_out = torch_out if isinstance(torch_out, tuple) else (torch_out,)
    return max(float(np.abs(o - t.numpy()).max()) for o, t in zip(onnx_out, torch_out))
