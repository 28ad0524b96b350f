"""The ONNX policy runner: onnxruntime only (no torch), as it runs on a robot computer.

It reads the policy's metadata (``tether.spec``, ``tether.policy``; see
``tether.policies.export``), keeps the observation history the policy needs, encodes the goal,
feeds camera frames to policies that read them, draws the sampler noise from a seeded generator,
and returns one action per control tick (``act``) or the policy's action chunk (``act_chunk``).
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tether.robot.spec import RobotSpec, SpecError


class PolicyLoadError(ValueError):
    """The file is not a tether ONNX policy (missing or malformed metadata)."""


GOAL_KINDS = ("task_one_hot", "observation", "text_embedding", "image", "multimodal")
"""How a policy's goal is given: a task's one-hot, the robot's ``observation.goal``, a language
embedding (of a training task, or any text through ``tether.policies.language_goals``), a
goal image (``goal_image`` input), or either of the last two (``goal``, ``goal_image`` and
``goal_is_image`` inputs: MDT's multimodal goals)."""
LANGUAGE_GOALS = ("text_embedding", "multimodal")
IMAGE_GOALS = ("image", "multimodal")


def check_metadata(meta: object, spec: RobotSpec) -> None:
    """Check a policy's ``tether.policy`` metadata (see ``tether.policies.export``) against its spec.

    Raises:
        ValueError: the metadata is not an object; ``window`` (observations per call),
            ``action_horizon`` or ``noise_length`` not a positive integer; ``goal`` not an object
            with a ``tasks`` list of strings; an observation goal whose ``key`` the spec lacks;
            no ``observation.state`` in the spec, or an action that is not a vector.
    """
    if not isinstance(meta, dict):
        raise ValueError(f"tether.policy is a JSON {type(meta).__name__}, not an object")
    for name, default in (("window", None), ("action_horizon", 1), ("noise_length", 1)):
        value = meta.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100_000:
            raise ValueError(f"{name} is {value!r}, not a positive integer"
                             + (" (observations the policy reads per action)" if name == "window" else ""))
    goal = meta.get("goal")
    if not isinstance(goal, dict):
        raise ValueError(f"goal is {goal!r}, not an object (kind, tasks)")
    tasks = goal.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise ValueError(f"goal.tasks is {tasks!r}, not a list of task names")
    kind = goal.get("kind", "task_one_hot")
    if kind not in GOAL_KINDS:
        raise ValueError(f"goal.kind is {kind!r}, not one of {', '.join(GOAL_KINDS)}")
    if kind in LANGUAGE_GOALS:
        emb = goal.get("embeddings")
        if (not isinstance(emb, list) or len(emb) != len(tasks)
                or not all(isinstance(e, list) and e and len(e) == len(emb[0]) for e in emb)):
            raise ValueError("goal.embeddings is not one embedding (a list of numbers) per task")
    if kind in IMAGE_GOALS:
        shape = goal.get("shape")
        if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape)):
            raise ValueError(f"goal.shape is {shape!r}, not a frame shape [H, W, 3]")
    if kind in ("task_one_hot", *LANGUAGE_GOALS) and not tasks:
        raise ValueError("goal.tasks is empty: a task-goal policy needs the tasks it was trained on")
    if kind == "observation" and goal.get("key") not in spec.observation:
        raise ValueError(f"goal.key is {goal.get('key')!r}, not an observation of the policy's spec")
    if "observation.state" not in spec.observation:
        raise ValueError("the policy's spec has no observation.state, which the runner feeds it")
    if len(spec.action.shape) != 1:
        raise ValueError(f"the policy's action has shape {spec.action.shape}, not a vector")


def open_session(path: Path, what: str, providers: list[str] | None = None) -> ort.InferenceSession:
    """An onnxruntime session of the ``what`` (policy, critic) file ``path``, one intra-op thread
    (one core per control loop: predictable latency), full graph optimization.

    Raises:
        PolicyLoadError: no such file, an empty file, or one onnxruntime cannot load (one line).
    """
    if not path.is_file():
        raise PolicyLoadError(f"{what} file {path} does not exist")
    if path.stat().st_size == 0:
        raise PolicyLoadError(f"{path} is empty, not an ONNX model (an export that never "
                              "finished? run tether export again)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors are its pybind11 classes
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PolicyLoadError(f"{path} is not an ONNX model onnxruntime can load ({first[:200]}; "
                              "cut short or overwritten? run tether export again)") from None


class PolicyRunner:
    """Run a tether ONNX policy.

    Args:
        path: the ``policy.onnx`` file.
        seed: seed of the noise generator (diffusion policies), for reproducible runs.
        providers: onnxruntime execution providers; default CPU. With ``onnxruntime-gpu``
            installed, ``["CUDAExecutionProvider", "CPUExecutionProvider"]``.
        deterministic: feed zero noise on every call, as ``act(..., deterministic=True)`` does
            for one call: a diffusion sampler (BESO) then starts from zeros, one plan per state;
            a stochastic SAC policy gives its mean action.
        critic: a ``critic.onnx`` (``tether.robot.critic``): each call draws ``candidates``
            noises, runs the policy on all of them in one batch and returns the candidate whose
            first action the critic scores highest (value-guided sampling, IDQL's greedy choice).
        candidates: N of the above (1 without a critic).

    Raises:
        PolicyLoadError: no such file, an empty file or one onnxruntime cannot load, no or bad
            tether metadata (``check_metadata``), or a graph whose inputs and outputs do not fit
            the metadata (an input it cannot feed, a size other than the metadata's); a critic
            that cannot guide the policy (``CriticRunner.check_policy``, or a policy without
            sampler noise); the message is one line.
        ValueError: ``candidates`` below 1, above 1 without a critic, or with ``deterministic``.
    """

    def __init__(self, path: Path | str, seed: int = 0, providers: list[str] | None = None,
                 deterministic: bool = False, critic: Path | str | None = None, candidates: int = 1):
        path = Path(path)
        self.session = open_session(path, "policy", providers)
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.spec = RobotSpec.from_json(meta["tether.spec"])
            self.meta = json.loads(meta["tether.policy"])
            check_metadata(self.meta, self.spec)
        except KeyError as e:
            raise PolicyLoadError(f"{path} is not a tether policy: its metadata lacks {e} (tether "
                                  "export writes it)") from None
        except (ValueError, TypeError, SpecError) as e:
            raise PolicyLoadError(f"{path} is not a tether policy: bad metadata ({e})") from None
        self.window = int(self.meta["window"])
        self.tasks: list[str] = list(self.meta["goal"]["tasks"])
        self.action_dim = self.spec.action.shape[0]
        self.action_horizon = int(self.meta.get("action_horizon", 1))
        self._noise_length = int(self.meta.get("noise_length", self.window))
        self._obs_feature = self.spec.observation["observation.state"]
        self._inputs = {i.name for i in self.session.get_inputs()}
        # graph inputs named by an observation feature (camera frames) take that observation
        self._images = [k for k in self.spec.observation
                        if k in self._inputs and k not in ("observation.state", "observation.goal")]
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._rng = np.random.default_rng(seed)
        self.deterministic = deterministic
        self._history: deque[np.ndarray] = deque(maxlen=self.window)
        # visuomotor sequence policies read a window of frames per camera, like the state
        self._image_window = bool(self.meta.get("image_window", False))
        self._frames: dict[str, deque[np.ndarray]] = {k: deque(maxlen=self.window) for k in self._images}
        # Task goals (a one-hot or a language embedding) and goal images are set at reset;
        # observation goals come with every observation.
        goal = self.meta["goal"]
        self.goal_kind: str = goal.get("kind", "task_one_hot")
        self._goal_key = goal.get("key") if self.goal_kind == "observation" else None
        self._embeddings = (np.asarray(goal["embeddings"], np.float32) if self.goal_kind in LANGUAGE_GOALS
                            else None)
        self._goal_shape = tuple(goal["shape"]) if self.goal_kind in IMAGE_GOALS else None
        self._fixed_goal: dict[str, np.ndarray | None] = {}
        goal_dim = len(self.tasks) if self._embeddings is None else self._embeddings.shape[1]
        # the goal inputs' values, set at reset (observation goals: "goal" comes with each observation)
        self._goal: dict[str, np.ndarray] = {}
        if self._goal_shape:
            self._goal["goal_image"] = np.zeros((1, *self._goal_shape), np.uint8)
        if self.goal_kind != "image":
            self._goal["goal"] = np.zeros((1, goal_dim), dtype=np.float32)
        if self.goal_kind == "multimodal":
            self._goal["goal_is_image"] = np.zeros((1, 1), np.float32)
        self._check_graph(path)
        self.critic, self.candidates = self._load_critic(critic, candidates)
        self.last_q: np.ndarray | None = None  # the critic's Q of the last call's candidates [N]

    def _load_critic(self, critic: Path | str | None, candidates: int):
        if candidates < 1:
            raise ValueError(f"{candidates} candidates: at least 1")
        if candidates > 1 and critic is None:
            raise ValueError(f"{candidates} candidates need a critic to rank them (1 without one)")
        if critic is None:
            return None, 1
        if self.deterministic and candidates > 1:
            raise ValueError("deterministic sampling gives one candidate per state: leave it off to rank candidates")
        from tether.robot.critic import CriticRunner

        runner = CriticRunner(critic)
        if "noise" not in self._inputs:
            raise PolicyLoadError(f"{runner.path} cannot guide this policy: a {self.meta['kind']} policy "
                                  "draws no noise, so it has one candidate per state")
        runner.check_policy(self.spec, self.meta["goal"])
        return runner, candidates

    def _check_graph(self, path: Path) -> None:
        """The graph's inputs and outputs against the metadata: every input one the runner feeds,
        and every fixed size what the runner feeds or the spec says.

        Raises:
            PolicyLoadError: an input the runner cannot feed, or one (or an output) whose size
                differs from the metadata's.
        """
        goal_dim = (self.spec.observation[self._goal_key].shape[0] if self._goal_key is not None
                    else self._goal["goal"].shape[1] if "goal" in self._goal else None)
        goal_what = {"observation": "goal observation", "text_embedding": "language embedding",
                     "multimodal": "language embedding"}.get(self.goal_kind, "task one-hot")
        goals = {"goal_image": ("goal image [B, H, W, 3]", (None, *(self._goal_shape or ()))),
                 "goal": (f"goal [B, {goal_what}]", (None, goal_dim)),
                 "goal_is_image": ("goal_is_image [B, 1]", (None, 1))}
        window = (self.window,) if self._image_window else ()
        expected = {
            "obs": ("observation window [B, window, state]", (None, self.window, self._obs_feature.shape[0])),
            **{name: goals[name] for name in self._goal},
            "noise": ("sampler noise [B, noise_length, action]", (None, self._noise_length, self.action_dim)),
            **{k: (f"camera {k} [B, {'window, ' if window else ''}H, W, C]",
                   (None, *window, *self.spec.observation[k].shape)) for k in self._images},
        }
        for node in self.session.get_inputs():
            if node.name not in expected:
                raise PolicyLoadError(f"{path}: the graph has an input {node.name!r} that the runner "
                                      f"cannot feed (it feeds {', '.join(expected)})")
            what, want = expected[node.name]
            self._check_shape(path, f"input {node.name!r} ({what})", node.shape, want)
        if "obs" not in self._inputs:
            raise PolicyLoadError(f"{path}: the graph has no 'obs' input for the observation window")
        if "action" not in self._outputs:
            raise PolicyLoadError(f"{path}: the graph has no 'action' output (it has {self._outputs})")
        for node in self.session.get_outputs():
            if node.name == "action":
                self._check_shape(path, "output 'action' [B, action]", node.shape, (None, self.action_dim))
            elif node.name == "actions":
                self._check_shape(path, "output 'actions' [B, horizon, action]", node.shape,
                                  (None, self.action_horizon, self.action_dim))

    @staticmethod
    def _check_shape(path: Path, what: str, shape: list, want: tuple) -> None:
        """Compare a graph node's shape (ints, or names/None for dynamic sizes) with ``want``
        (None: any size); only fixed sizes are compared."""
        fixed = [d if isinstance(d, int) and d > 0 else None for d in shape]
        if len(fixed) != len(want) or any(d is not None and w is not None and d != w
                                          for d, w in zip(fixed, want)):
            shown = [d if isinstance(d, int) else "?" for d in shape]
            expected = ["B" if w is None else w for w in want]
            raise PolicyLoadError(f"{path}: the graph's {what} has shape {shown}, but its metadata "
                                  f"and spec make it {expected} (a graph exported for another robot "
                                  "or window? export it again)")

    @property
    def noise_shape(self) -> tuple[int, int, int] | None:
        """Shape of the noise fed per action (diffusion samplers, stochastic SAC policies), else None."""
        if "noise" not in self._inputs:
            return None
        return (1, self._noise_length, self.action_dim)

    @property
    def goal_conditioned_on_observations(self) -> bool:
        """The goal is read from each observation (``observation.goal``), not set per task."""
        return self._goal_key is not None

    def reset(self, task: str | None = None, seed: int | list[int] | None = None,
              goal_image: np.ndarray | None = None, goal_embedding: np.ndarray | None = None) -> None:
        """Start an episode (clears the observation history); ``task`` sets a task goal;
        ``seed`` reseeds the sampler noise, so the episode does not depend on the ones before it.
        A goal-image policy takes ``goal_image`` uint8 [H, W, 3]; a language-goal policy takes
        ``task`` (one of its training tasks) or ``goal_embedding`` float [E] (any instruction,
        embedded by ``tether.policies.language_goals.text_embeddings`` where torch is installed);
        a multimodal-goal policy takes either, and follows ``goal_image`` when given one.

        Raises:
            ValueError: a task-goal policy was not trained on ``task``; a goal image or
                embedding missing, of the wrong shape or dtype, or not finite (one line, with the
                expected shape).
        """
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        goal_image = self._fixed_goal.get("goal_image") if goal_image is None else goal_image
        goal_embedding = self._fixed_goal.get("goal_embedding") if goal_embedding is None else goal_embedding
        if goal_image is not None and self.goal_kind in IMAGE_GOALS:
            image = np.asarray(goal_image)
            if image.shape != self._goal_shape or image.dtype != np.uint8:
                raise ValueError(f"goal image has shape {list(image.shape)} {image.dtype}, but the policy "
                                 f"takes {list(self._goal_shape)} uint8 (its goal camera's frames)")
            self._goal["goal_image"][0] = image
            self._set_goal_is_image(1.0)
        elif self.goal_kind == "image":
            raise ValueError(f"the policy is conditioned on a goal image {list(self._goal_shape)} "
                             "(uint8 RGB): give one (tether eval --goal-image FILE)")
        elif goal_embedding is not None and self.goal_kind in LANGUAGE_GOALS:
            e = np.asarray(goal_embedding, np.float32).reshape(-1)
            size = self._goal["goal"].shape[1]
            if e.shape[0] != size or not np.isfinite(e).all():
                raise ValueError(f"goal embedding has {e.shape[0]} values (finite: {bool(np.isfinite(e).all())}), "
                                 f"but the policy takes {size} finite values")
            self._goal["goal"][0] = e
            self._set_goal_is_image(0.0)
        elif self._goal_key is None:
            if task not in self.tasks:
                raise ValueError(f"the policy knows tasks {self.tasks}, not {task!r}")
            if self._embeddings is not None:  # a language goal: the task's own words
                self._goal["goal"][0] = self._embeddings[self.tasks.index(task)]
            else:
                self._goal["goal"][:] = 0
                self._goal["goal"][0, self.tasks.index(task)] = 1
            self._set_goal_is_image(0.0)
        self._history.clear()
        for frames in self._frames.values():
            frames.clear()

    def _set_goal_is_image(self, value: float) -> None:
        if "goal_is_image" in self._goal:  # multimodal goals: which of the two the graph follows
            self._goal["goal_is_image"][0] = value

    @property
    def fixed_goal(self) -> dict[str, np.ndarray | None]:
        """The goal ``fix_goal`` gave (its keyword arguments), or {}."""
        return dict(self._fixed_goal)

    @property
    def goal_image_shape(self) -> tuple[int, ...] | None:
        """(H, W, 3) of a goal-image policy's goal, else None."""
        return self._goal_shape

    def fix_goal(self, goal_image: np.ndarray | None = None, goal_embedding: np.ndarray | None = None) -> None:
        """Give every later episode this goal image or language embedding (``tether eval
        --goal-image / --goal-text``) unless ``reset`` is given its own.

        Raises:
            ValueError: a goal this policy does not take (a goal image for a policy without image
                goals, an embedding for one without language goals), or one ``reset`` refuses.
        """
        if goal_image is not None and self.goal_kind not in IMAGE_GOALS:
            raise ValueError(f"the policy's goal is a {self.goal_kind.replace('_', ' ')}, not a goal image")
        if goal_embedding is not None and self.goal_kind not in LANGUAGE_GOALS:
            raise ValueError(f"the policy's goal is a {self.goal_kind.replace('_', ' ')}, not a language goal")
        if goal_image is not None and goal_embedding is not None:
            raise ValueError("give a goal image or a language goal, not both")
        self._fixed_goal = {"goal_image": goal_image, "goal_embedding": goal_embedding}
        self.reset(self.tasks[0] if self.tasks else None)  # checks it now, before any episode

    def observe(self, observation: dict[str, np.ndarray]) -> None:
        """Add an observation to the policy's history without acting: the ticks on which the
        later actions of a chunk run (``act`` and ``act_chunk`` observe by themselves).

        Raises:
            SpecError: the state's shape/dtype does not fit, or it holds NaN/inf.
        """
        state = self._obs_feature.validate("observation.state", observation["observation.state"])
        first = not self._history
        if first:
            self._history.extend([state] * self.window)  # pad the window with the first frame
        else:
            self._history.append(state)
        if self._image_window:
            for key, frames in self._frames.items():
                frame = self._frame(key, observation)
                frames.extend([frame] * (self.window if first else 1))

    def _frame(self, key: str, observation: dict[str, np.ndarray]) -> np.ndarray:
        if key not in observation:
            raise SpecError(f"the policy reads {key}, which the observation lacks")
        return self.spec.observation[key].validate(key, observation[key])

    def _run(self, observation: dict[str, np.ndarray], deterministic: bool = False) -> dict[str, np.ndarray]:
        self.observe(observation)
        feed = {"obs": np.stack(self._history)[None], **self._goal}
        if self._goal_key is not None:
            if self._goal_key not in observation:
                raise SpecError(f"the policy is conditioned on {self._goal_key}, which the "
                                "observation lacks (a robot that publishes goals is needed)")
            feature = self.spec.observation[self._goal_key]
            feed["goal"] = feature.validate(self._goal_key, observation[self._goal_key])[None]
        for key in self._images:
            feed[key] = (np.stack(self._frames[key])[None] if self._image_window
                         else self._frame(key, observation)[None])
        k = self.candidates
        if k > 1:  # every input once per candidate: one batched call
            feed = {name: np.repeat(value, k, axis=0) for name, value in feed.items()}
        if self.noise_shape is not None:  # a diffusion sampler's or a stochastic policy's noise
            shape = (k, *self.noise_shape[1:])
            feed["noise"] = (np.zeros(shape, np.float32) if deterministic or self.deterministic
                             else self._rng.standard_normal(shape, dtype=np.float32))
        out = dict(zip(self._outputs, self.session.run(self._outputs, feed)))
        if self.critic is None:
            return out
        self.last_q = self.critic.q(feed["obs"][:, -1], feed["goal"], out["action"])
        best = int(np.argmax(self.last_q))
        return {name: value[best:best + 1] for name, value in out.items()}

    def act(self, observation: dict[str, np.ndarray], deterministic: bool = False) -> np.ndarray:
        """One action (float32, shape of the spec's action) for the current observation;
        ``deterministic`` feeds a policy with a noise input zeros (a stochastic SAC policy then
        gives its mean action, tanh(mu), as its exported mean policy does).

        Raises:
            SpecError: an observation's shape/dtype does not fit, it holds NaN/inf, or a camera
                the policy reads is missing.
        """
        return self._run(observation, deterministic)["action"][0]

    def act_chunk(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """The policy's action chunk [H, A] from now on (H = ``action_horizon``; [1, A] for
        policies without chunks), for ``RobotClient.send_chunk``.

        Raises:
            SpecError: as ``act``.
        """
        out = self._run(observation)
        return out["actions"][0] if "actions" in out else out["action"]
