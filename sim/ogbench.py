"""OGBench manipulation adapter: environments, robot spec, play-data oracles and evaluation goals.

OGBench (Park et al., "OGBench: Benchmarking Offline Goal-Conditioned RL", 2024;
github.com/seohongpark/ogbench) gives a UR5e arm with a Robotiq 2F-85 gripper in MuJoCo scenes
(``ogbench.manipspace``). tether serves two of them:

- ``cube-single`` (OGBench id ``cube-single-v0``): one cube; evaluation episodes of 200 steps.
- ``scene`` (``scene-v0``): a cube, two lock buttons, a drawer and a window; 750 steps.

Control: 20 Hz (OGBench's ``control_timestep`` 0.05 s = 25 physics steps of 2 ms). The action is
5 values in [-1, 1], relative end-effector commands solved by OGBench's differential IK: dx, dy, dz
(1.0 = 5 cm), dyaw (1.0 = 0.3 rad) and dgripper (1.0 = the full opening range).

``observation.state`` is OGBench's own state observation (28 values for cube-single, 40 for scene),
float32, in OGBench's scaling (``compute_observation`` of its envs):

- arm joint positions (rad, 6) and velocities (rad/s, 6);
- effector x, y, z in decimetres from the workspace centre (``(p - [0.425, 0, 0]) * 10``, p in m);
  cos and sin of the effector yaw; gripper opening x 3 (0 closed .. 3 open); gripper pad contact
  (0..1);
- per cube: position (same decimetre transform), quaternion (w, x, y, z), cos and sin of its yaw;
- scene only, per button: state one-hot (off, on), travel (m x 120) and velocity (m/s); drawer
  slide (m x 18) and velocity; window slide (m x 15) and velocity.

The robot server also publishes ``observation.goal`` (the goal observation, same layout; zeros in
play episodes, which have none), ``observation.qpos`` / ``observation.qvel`` (the MuJoCo state,
float32, as OGBench's datasets store it: the scripted teleoperator and goal rendering need it) and,
per camera, ``observation.images.<camera>`` and ``observation.goal_images.<camera>``.

Images come from tether's ``OffscreenCamera`` (shadows, reflections and multisampling off) rather
than OGBench's ``env.render()``: it is ~5x faster headless, it goes through tether's rendering
preflight (one-line fix when EGL is missing), and the goal image of an evaluation task is rendered
by the same camera (OGBench's goal render is routed to it), so goal and observation images match
pixel for pixel in style. The default camera is ``front_pixels`` at 64 px, the viewpoint and size
of OGBench's ``visual-*`` envs.

Evaluation goals (5 per env, OGBench's ``task_infos``): ``reset(options=dict(task_id=k,
render_goal=True))`` puts the scene in the goal configuration, records the goal observation, then
resets to the task's initial configuration (object positions jittered by +-1 cm, random arm pose).
Success (OGBench): every cube within 4 cm of its goal and, in scene, button states equal and
drawer / window within 4 cm of their goal positions.

Play data (OGBench's ``data_gen_scripts/generate_manipspace.py``): an episode starts from a random
scene; a subtask is drawn (cube to a random place, toggle a button, open/close the drawer or the
window), OGBench's oracle for it runs until it is done, then the next subtask is drawn, until the
fixed episode length. ``play`` datasets use the plan oracles (keyframe plans with temporally
smoothed Gaussian noise, noise 0.1, smoothing 0.5); ``noisy`` datasets use the Markov oracles with
per-episode Gaussian action noise. ``PlayPolicy`` implements this as a teleoperator: it sees only
what the robot server publishes.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from tether.robot.spec import Feature, RobotSpec

CONTROL_RATE_HZ = 20.0  # OGBench control_timestep 0.05 s
TASKS = ("task1", "task2", "task3", "task4", "task5")
PLAY = "play"
DEFAULT_CAMERA = "front_pixels"
ACTION_NAMES = ("dx", "dy", "dz", "dyaw", "dgripper")
STATE_UNIT = "rad|rad/s|dm|scaled"  # per element: see the module docstring
INSTALL_HINT = "pip install 'tether[ogbench]'"

_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3")
_PROPRIO = (
    *(f"{j}_pos" for j in _JOINTS), *(f"{j}_vel" for j in _JOINTS),
    "effector_x", "effector_y", "effector_z", "effector_yaw_cos", "effector_yaw_sin",
    "gripper_opening", "gripper_contact",
)


def _cube(i: int) -> tuple[str, ...]:
    return (f"cube{i}_x", f"cube{i}_y", f"cube{i}_z", f"cube{i}_qw", f"cube{i}_qx", f"cube{i}_qy",
            f"cube{i}_qz", f"cube{i}_yaw_cos", f"cube{i}_yaw_sin")


_SCENE_EXTRA = (
    *(n for i in range(2) for n in (f"button{i}_off", f"button{i}_on", f"button{i}_pos", f"button{i}_vel")),
    "drawer_pos", "drawer_vel", "window_pos", "window_vel",
)


@dataclass(frozen=True)
class EnvInfo:
    """What tether needs to know about one OGBench env.

    Attributes:
        gym_id: OGBench's gymnasium id (registered by ``import ogbench.manipspace``).
        state_names: one name per element of ``observation.state``.
        subtasks: play subtasks (keys of ``privileged/target_task``).
        p_stack: probability that a cube subtask stacks cubes (OGBench's generator: 0 for one cube).
    """

    gym_id: str
    state_names: tuple[str, ...]
    subtasks: tuple[str, ...]
    p_stack: float


ENVS: dict[str, EnvInfo] = {
    "cube-single": EnvInfo("cube-single-v0", _PROPRIO + _cube(0), ("cube",), 0.0),
    "scene": EnvInfo("scene-v0", _PROPRIO + _cube(0) + _SCENE_EXTRA,
                     ("cube", "button", "drawer", "window"), 0.5),
}


class UnknownEnvError(ValueError):
    """The name is not an OGBench env tether serves."""


class OGBenchNotInstalledError(ImportError):
    """The ``ogbench`` package (the ``tether[ogbench]`` extra) is missing."""


def check_env(name: str) -> EnvInfo:
    """The ``EnvInfo`` of ``name``.

    Raises:
        UnknownEnvError: one line naming the known envs (and a close match).
    """
    if name not in ENVS:
        close = difflib.get_close_matches(name, ENVS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UnknownEnvError(f"unknown OGBench env {name!r}{hint} (tether serves: {', '.join(ENVS)})")
    return ENVS[name]


def import_ogbench():
    """``ogbench.manipspace`` (importing it registers OGBench's envs with gymnasium).

    Raises:
        OGBenchNotInstalledError: with the install command.
    """
    from tether.sim.render import load_triton_before_gl

    # dm_control (under OGBench) opens its GL backend at import: triton must be loaded first
    load_triton_before_gl()
    try:
        import ogbench.manipspace
    except ImportError as e:
        raise OGBenchNotInstalledError(f"OGBench is not installed ({e}): {INSTALL_HINT}") from e
    return ogbench.manipspace


@functools.cache
def _env_class(name: str):
    """OGBench's env class for ``name``, with a seeded ``action_space``.

    OGBench's task reset takes two random actions to settle the goal scene, drawn from a fresh,
    unseeded ``Box`` (``action_space`` builds one per call): the goal observation then differs at
    every reset. Seeding that ``Box`` from the env's own generator makes a task's goal a function
    of the reset seed.
    """
    import gymnasium
    from gymnasium.envs.registration import load_env_creator

    import_ogbench()
    base = load_env_creator(gymnasium.spec(ENVS[name].gym_id).entry_point)

    class Seeded(base):
        @property
        def action_space(self):
            space = super().action_space
            space.seed(int(self.np_random.integers(2**31)))
            return space

    Seeded.__name__ = Seeded.__qualname__ = f"Seeded{base.__name__}"
    return Seeded


def make_env(name: str, mode: Literal["task", "data_collection"] = "task", seed: int = 0):
    """An OGBench env (unwrapped: no gymnasium wrappers), compiled by a first ``reset(seed)``.

    ``task`` mode serves the evaluation tasks (episode ends at success, as OGBench evaluates);
    ``data_collection`` mode starts episodes from random scenes for play data. Target markers are
    hidden (``visualize_info=False``, as in OGBench's visual envs) so camera frames show only the
    scene. Building one takes ~1 s (dm_control MJCF assembly).

    Raises:
        UnknownEnvError, OGBenchNotInstalledError.
    """
    import gymnasium

    check_env(name)
    # OGBench builds float64 Box bounds that gymnasium casts to the float32 spaces it declares:
    # nothing tether uses is lost, and the warning would repeat in every eval worker.
    warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32")
    env = _spares.pop((name, mode), None)
    if env is None:
        cls = _env_class(name)
        kwargs = dict(gymnasium.spec(ENVS[name].gym_id).kwargs)
        env = cls(**kwargs, mode=mode, visualize_info=False, terminate_at_goal=(mode == "task"))
    env.reset(seed=seed)
    return env


# Envs built only to read their layout (``sim_layout``), handed to the next ``make_env`` of the
# same kind instead of building another (each build costs ~1 s).
_spares: dict[tuple[str, str], object] = {}


def episode_limit(name: str) -> int:
    """OGBench's evaluation horizon for ``name`` in control steps (200 cube-single, 750 scene)."""
    import gymnasium

    import_ogbench()
    return int(gymnasium.spec(check_env(name).gym_id).max_episode_steps)


@functools.cache
def sim_layout(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Names of the MuJoCo ``qpos`` and ``qvel`` elements of ``name`` (built once per process)."""
    import mujoco

    env = make_env(name, "data_collection")
    _spares[name, "data_collection"] = env
    model = env._model
    qpos, qvel = [], []
    for j in range(model.njnt):
        joint = model.joint(j).name
        kind = model.jnt_type[j]
        if kind == mujoco.mjtJoint.mjJNT_FREE:
            qpos += [f"{joint}/{a}" for a in ("x", "y", "z", "qw", "qx", "qy", "qz")]
            qvel += [f"{joint}/{a}" for a in ("vx", "vy", "vz", "wx", "wy", "wz")]
        elif kind == mujoco.mjtJoint.mjJNT_BALL:
            qpos += [f"{joint}/{a}" for a in ("qw", "qx", "qy", "qz")]
            qvel += [f"{joint}/{a}" for a in ("wx", "wy", "wz")]
        else:
            qpos.append(joint)
            qvel.append(joint)
    return tuple(qpos), tuple(qvel)


def ogbench_spec(
    name: str,
    cameras: tuple[str, ...] = (DEFAULT_CAMERA,),
    image_size: int = 64,
    goal: bool = True,
    sim_state: bool = True,
) -> RobotSpec:
    """The robot spec of OGBench env ``name`` (units in the module docstring).

    Args:
        cameras: camera names of the scene (``front``, ``front_pixels``), one image feature each.
        image_size: square image size in pixels.
        goal: include ``observation.goal`` (and one ``observation.goal_images.<camera>`` per
            camera): what the robot server publishes. A play dataset leaves them out.
        sim_state: include ``observation.qpos`` and ``observation.qvel``.

    Raises:
        UnknownEnvError: an unknown env.
    """
    info = check_env(name)
    dim = len(info.state_names)
    observation = {"observation.state": Feature("float32", (dim,), info.state_names, STATE_UNIT)}
    if goal:
        observation["observation.goal"] = Feature("float32", (dim,), info.state_names, STATE_UNIT)
    if sim_state:
        qpos, qvel = sim_layout(name)
        observation["observation.qpos"] = Feature("float32", (len(qpos),), qpos, "m|rad|quat")
        observation["observation.qvel"] = Feature("float32", (len(qvel),), qvel, "m/s|rad/s")
    for cam in cameras:
        image = Feature("uint8", (image_size, image_size, 3), unit="pixel")
        observation[f"observation.images.{cam}"] = image
        if goal:
            observation[f"observation.goal_images.{cam}"] = image
    action = Feature("float32", (5,), ACTION_NAMES, "normalized", (-1.0,) * 5, (1.0,) * 5)
    return RobotSpec(f"ogbench-{name}", CONTROL_RATE_HZ, observation, action,
                     tasks=(*TASKS, PLAY))


def check_task(task: str) -> int:
    """The OGBench task id (1..5) of ``task`` (``task1``..``task5``), or 0 for ``play``.

    Raises:
        ValueError: any other name.
    """
    if task == PLAY:
        return 0
    if task not in TASKS:
        raise ValueError(f"unknown OGBench task {task!r}: one of {', '.join(TASKS)} or {PLAY}")
    return TASKS.index(task) + 1


class OGBenchSim:
    """One OGBench env stepped one control period at a time, with cameras and goals.

    Evaluation tasks and play episodes need different OGBench modes, so each has its own env
    instance, built on first use (~1 s each).

    Args:
        name: ``scene`` or ``cube-single``.
        cameras: cameras to render every step (uint8 (image_size, image_size, 3)).
        image_size: square image size in pixels.
        play_steps: length of a play episode in control steps (OGBench's play datasets: 1000).
        eval_steps: horizon of evaluation episodes; None: OGBench's (``episode_limit``).

    Raises:
        UnknownEnvError, OGBenchNotInstalledError; RenderBackendError (no headless GL) and
        ValueError (unknown camera) when the first env is built.
    """

    def __init__(self, name: str, cameras: tuple[str, ...] = (DEFAULT_CAMERA,), image_size: int = 64,
                 play_steps: int = 1000, eval_steps: int | None = None):
        check_env(name)
        import_ogbench()
        self.name = name
        self.cameras = tuple(cameras)
        self.image_size = image_size
        self.spec = ogbench_spec(name, self.cameras, image_size)
        self.limits = {PLAY: play_steps, "eval": eval_steps or episode_limit(name)}
        self._envs: dict[str, object] = {}
        self._cams: dict[str, list] = {}
        self._goal_images: dict[str, np.ndarray] = {}
        self.env = None
        self.task: str | None = None
        self.goal = np.zeros(len(ENVS[name].state_names), np.float32)
        self.steps = 0

    def build(self, kind: Literal["eval", "play"]):
        """The env serving ``kind`` (built and given its cameras on first use)."""
        if kind not in self._envs:
            from tether.sim.render import OffscreenCamera

            env = make_env(self.name, "task" if kind == "eval" else "data_collection")
            cams = [OffscreenCamera(env._model, c, self.image_size, self.image_size) for c in self.cameras]
            if kind == "eval":
                # OGBench renders the goal while the goal scene is set up inside reset(): route
                # that render to our cameras so goal and observation images look alike.
                def render_goal(*_, **__):
                    self._goal_images = {c.camera: c.render(env._data) for c in cams}
                    return None

                env.render = render_goal
            self._envs[kind], self._cams[kind] = env, cams
        return self._envs[kind]

    def reset(self, task: str, seed: int) -> dict[str, np.ndarray]:
        """Start an episode: ``task1``..``task5`` (OGBench evaluation goal ``task_id``) or
        ``play`` (a random scene). Returns the observation values (feature key -> array).

        Raises:
            ValueError: an unknown task.
        """
        task_id = check_task(task)
        kind = "eval" if task_id else PLAY
        self.env = self.build(kind)
        self._kind = kind
        if task_id:
            self._goal_images = {}
            _, info = self.env.reset(seed=int(seed), options=dict(task_id=task_id, render_goal=True))
            self.goal = np.asarray(info["goal"], np.float32)
        else:
            self.env.reset(seed=int(seed))
            self.goal = np.zeros_like(self.goal)
            self._goal_images = {c: np.zeros(self.spec.observation[f"observation.images.{c}"].shape,
                                             np.uint8) for c in self.cameras}
        self.task, self.steps = task, 0
        return self.observation()

    def observation(self) -> dict[str, np.ndarray]:
        """The current observation values (every observation feature of ``spec``)."""
        env = self.env
        values = {
            "observation.state": np.asarray(env.compute_observation(), np.float32),
            "observation.goal": self.goal,
            "observation.qpos": env._data.qpos.astype(np.float32),
            "observation.qvel": env._data.qvel.astype(np.float32),
        }
        for cam in self._cams[self._kind]:
            values[f"observation.images.{cam.camera}"] = cam.render(env._data)
            values[f"observation.goal_images.{cam.camera}"] = self._goal_images[cam.camera]
        return values

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], bool, bool]:
        """Apply ``action`` (float32 (5,), in [-1, 1]) for one 50 ms control period.

        Returns (observation values, success, truncated). Success is OGBench's for evaluation
        tasks and always False in play (play has no goal).

        Raises:
            RuntimeError: before ``reset``.
        """
        if self.env is None:
            raise RuntimeError("reset() before step()")
        _, _, _, _, info = self.env.step(np.asarray(action, np.float64))
        self.steps += 1
        success = bool(info["success"]) if self._kind == "eval" else False
        truncated = self.steps >= self.limits[self._kind]
        return self.observation(), success, truncated

    def close(self) -> None:
        for cams in self._cams.values():
            for cam in cams:
                cam.close()
        self._envs.clear()
        self._cams.clear()
        self.env = None


# ------------------------------------------------------------------------------- play data


def scene_healthy(name: str, qpos: np.ndarray) -> bool:
    """OGBench's health check of play episodes (its generator retries an episode that fails):
    in scene the cube must stay visible, i.e. not past y = 0.29 m on the right nor past
    y = -0.3 m on the left unless it is in the drawer (0.06 m <= z <= 0.08 m). Always True for
    other envs. ``qpos``: the MuJoCo qpos (``observation.qpos``)."""
    if name != "scene":
        return True
    x, y, z = np.asarray(qpos)[_cube_qpos_index(name)]
    return not (y >= 0.29 or (y <= -0.3 and not 0.06 <= z <= 0.08))


@functools.cache
def _cube_qpos_index(name: str) -> slice:
    start = sim_layout(name)[0].index("object_joint_0/x")
    return slice(start, start + 3)


_SUCCESS_M = 0.04  # OGBench's subtask success radius (cube, drawer, window)


def _subtask_achieved(task: str, info: dict) -> bool:
    """Whether the current play subtask is achieved, by OGBench's criteria (``_compute_successes``
    of its envs), from the oracle's info."""
    if task == "cube":
        b = info["privileged/target_block"]
        return bool(np.linalg.norm(info[f"privileged/block_{b}_pos"] - info["privileged/target_block_pos"]) <= _SUCCESS_M)
    if task == "button":
        b = info["privileged/target_button"]
        return bool(info[f"privileged/button_{b}_state"] == info["privileged/target_button_state"])
    return bool(abs(info[f"privileged/{task}_pos"][0] - info[f"privileged/target_{task}_pos"][0]) <= _SUCCESS_M)


@dataclass
class PlayStats:
    """Subtasks of a behaviour policy: started and achieved (when the oracle finished) per kind."""

    started: dict[str, int] = field(default_factory=dict)
    achieved: dict[str, int] = field(default_factory=dict)


class PlayPolicy:
    """OGBench's play-data behaviour policy as a teleoperator: observation values -> action.

    It sees only what the robot server publishes (``observation.state``, ``observation.qpos``,
    ``observation.qvel`` and the episode step). The subtask target is the teleoperator's intent,
    not part of the robot, so it lives here: a local OGBench env in ``data_collection`` mode
    (no physics is stepped in it) is set to the published state each step; OGBench's
    ``set_new_target`` draws the next subtask from it and OGBench's oracle reads its info.

    Args:
        name: ``scene`` or ``cube-single``.
        oracle: ``plan`` (OGBench's ``play`` datasets: keyframe plans with smoothed noise) or
            ``markov`` (OGBench's ``noisy`` datasets: closed-loop oracle, Gaussian action noise of
            std ``xi * (1, 1, 1, 3, 10)`` with ``xi ~ U(0, noise)`` per episode).
        noise: noise level (OGBench's default 0.1).
        noise_smoothing: Gaussian smoothing (in steps) of the plan noise (OGBench's 0.5).
        min_norm: the Markov oracles' minimum displacement norm (OGBench's 0.4).
        p_random_action: probability of a uniform random action per step (OGBench's default 0).

    The oracles draw from numpy's global generator; each ``PlayPolicy`` swaps its own seeded state
    in around them, so episodes are reproducible from ``reset(..., seed)`` and other users of
    ``np.random`` are left alone.

    Raises:
        UnknownEnvError, OGBenchNotInstalledError, ValueError (unknown oracle).
    """

    def __init__(self, name: str, oracle: Literal["plan", "markov"] = "plan", noise: float = 0.1,
                 noise_smoothing: float = 0.5, min_norm: float = 0.4, p_random_action: float = 0.0):
        info = check_env(name)
        if oracle not in ("plan", "markov"):
            raise ValueError(f"oracle must be plan or markov, not {oracle!r}")
        self.name, self.kind, self.noise = name, oracle, noise
        self.p_random_action = p_random_action
        self.env = make_env(name, "data_collection")
        self.dt = float(self.env._control_timestep)
        self.stats = PlayStats()
        self._rs = np.random.RandomState(0)
        self._rng = np.random.default_rng(0)
        with self._global_rng():
            self.oracles = _oracles(name, self.env, oracle, noise, noise_smoothing, min_norm)
        self._subtasks = info.subtasks
        self._xi = 0.0
        self._agent = None
        self._task: str | None = None
        self._info: dict = {}

    @contextlib.contextmanager
    def _global_rng(self):
        saved = np.random.get_state()
        np.random.set_state(self._rs.get_state())
        try:
            yield
        finally:
            self._rs.set_state(np.random.get_state())
            np.random.set_state(saved)

    def _sync(self, values: dict[str, np.ndarray], step: int) -> dict:
        """Set the local env to the published state; OGBench's info dict for the oracles."""
        env = self.env
        qpos = np.asarray(values["observation.qpos"], np.float64)
        qvel = np.asarray(values["observation.qvel"], np.float64)
        if self.name == "scene":
            names = ENVS["scene"].state_names
            state = values["observation.state"]
            buttons = np.array([int(state[names.index(f"button{i}_on")] > 0.5) for i in range(2)])
            env.set_state(qpos, qvel, buttons)
        else:
            env.set_state(qpos, qvel)
        env._data.time = step * self.dt  # the plan oracles index their plan by time
        info = env.compute_ob_info()
        # Contact forces come from a physics step, which the local env never takes: use the
        # robot's own reading (the Markov cube oracle grasps on it).
        contact = values["observation.state"][_PROPRIO.index("gripper_contact")]
        info["proprio/gripper_contact"] = np.array([contact], np.float64)
        return info

    def reset(self, values: dict[str, np.ndarray], step: int, seed: int) -> None:
        """Start a play episode from the published observation ``values`` at episode ``step``
        (0 after a reset); draws the first subtask. ``seed`` makes the episode reproducible."""
        self._rs.seed(int(seed) % 2**32)
        self._rng = np.random.default_rng(seed)
        self.env.reset(seed=int(seed))  # seeds OGBench's subtask draws (env.np_random)
        if self.kind == "markov":
            self._xi = float(self._rng.uniform(0, self.noise))
        self._info = self._sync(values, step)
        self._agent = None
        self._next_subtask(values, step)

    def _next_subtask(self, values, step) -> None:
        if self._agent is not None:
            achieved = _subtask_achieved(self._task, self._info)
            self.stats.achieved[self._task] = self.stats.achieved.get(self._task, 0) + achieved
        with self._global_rng():
            self.env.set_new_target(return_info=False, p_stack=ENVS[self.name].p_stack)
            info = self._sync(values, step)
            self._task = str(info["privileged/target_task"])
            self._agent = self.oracles[self._task]
            self._agent.reset(None, info)
        self._info = info
        self.stats.started[self._task] = self.stats.started.get(self._task, 0) + 1

    @property
    def subtask(self) -> str | None:
        """The subtask in progress (``cube``, ``button``, ``drawer``, ``window``)."""
        return self._task

    def __call__(self, values: dict[str, np.ndarray], step: int) -> np.ndarray:
        """The action (float32 (5,), in [-1, 1]) for the published ``values`` at episode ``step``.

        Raises:
            RuntimeError: before ``reset``.
        """
        if self._agent is None:
            raise RuntimeError("reset() before acting")
        self._info = self._sync(values, step)
        if self._agent.done:  # OGBench switches subtask once the oracle has finished its plan
            self._next_subtask(values, step)
        with self._global_rng():
            action = np.asarray(self._agent.select_action(None, self._info), np.float64)
        if self.kind == "markov":
            action = action + self._rng.normal(0, 1, 5) * self._xi * np.array([1, 1, 1, 3, 10])
        if self.p_random_action and self._rng.uniform() < self.p_random_action:
            action = self._rng.uniform(-1, 1, 5)
        return np.clip(action, -1, 1).astype(np.float32)


def _oracles(name: str, env, kind: str, noise: float, smoothing: float, min_norm: float) -> dict:
    """OGBench's oracle per subtask, configured as its data generator does."""
    if kind == "plan":
        from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
        from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
        from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
        from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

        classes = dict(cube=CubePlanOracle, button=ButtonPlanOracle, drawer=DrawerPlanOracle,
                       window=WindowPlanOracle)
        kw = dict(env=env, noise=noise, noise_smoothing=smoothing)
        return {t: classes[t](**kw) for t in ENVS[name].subtasks}
    from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle
    from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
    from ogbench.manipspace.oracles.markov.drawer_markov import DrawerMarkovOracle
    from ogbench.manipspace.oracles.markov.window_markov import WindowMarkovOracle

    classes = dict(cube=CubeMarkovOracle, button=ButtonMarkovOracle, drawer=DrawerMarkovOracle,
                   window=WindowMarkovOracle)
    out = {t: classes[t](env=env, min_norm=min_norm) for t in ENVS[name].subtasks}
    if name == "scene":  # OGBench's generator gives the scene's cube oracle 100 steps
        out["cube"] = CubeMarkovOracle(env=env, min_norm=min_norm, max_step=100)
    return out


# ------------------------------------------------------------------------------ evaluation

Policy = Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], np.ndarray]


@dataclass
class EvalEpisode:
    """One evaluation episode: task, seed, success, steps taken, video file (or None)."""

    task: str
    seed: int
    success: bool
    steps: int
    video: Path | None = None


@dataclass
class EvalResult:
    """Episodes of an OGBench evaluation and their success rates."""

    env: str
    episodes: list[EvalEpisode]

    def success_rate(self, task: str | None = None) -> float:
        """Success rate of ``task`` (all tasks when None), in [0, 1]."""
        eps = [e for e in self.episodes if task is None or e.task == task]
        return float(np.mean([e.success for e in eps])) if eps else float("nan")

    def per_task(self) -> dict[str, float]:
        """Task -> success rate, in task order."""
        return {t: self.success_rate(t) for t in dict.fromkeys(e.task for e in self.episodes)}

    def to_dict(self) -> dict:
        """A JSON-ready report: env, per-task and overall success, episodes."""
        return {
            "env": self.env,
            "success_rate": self.success_rate(),
            "per_task": self.per_task(),
            "episodes": [{"task": e.task, "seed": e.seed, "success": e.success, "steps": e.steps,
                          "video": None if e.video is None else str(e.video)} for e in self.episodes],
        }


def goal_of(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The goal part of observation ``values``, keyed like the observation it stands for:
    ``observation.goal`` -> ``observation.state``, ``observation.goal_images.<c>`` ->
    ``observation.images.<c>``."""
    goal = {"observation.state": values["observation.goal"]}
    for key, value in values.items():
        if key.startswith("observation.goal_images."):
            goal["observation.images." + key.removeprefix("observation.goal_images.")] = value
    return goal


def evaluate(
    name: str,
    policy: Policy,
    episodes_per_task: int = 20,
    seed: int = 0,
    tasks: tuple[str, ...] = TASKS,
    cameras: tuple[str, ...] = (),
    image_size: int = 64,
    video_dir: Path | None = None,
    videos_per_task: int = 1,
    video_camera: str = DEFAULT_CAMERA,
    video_size: int = 128,
    max_episode_steps: int | None = None,
    on_episode: Callable[[EvalEpisode], None] | None = None,
) -> EvalResult:
    """Run ``policy`` on OGBench's evaluation goals of ``name``, directly in sim.

    Episode j of every task starts from seed ``seed + j`` and ends at success (OGBench's
    criterion) or after ``max_episode_steps`` (default OGBench's: 200 cube-single, 750 scene).

    Args:
        policy: ``policy(obs, goal) -> action``. ``obs`` holds ``observation.state`` (float32
            (D,)) and ``observation.images.<camera>`` (uint8 (image_size, image_size, 3)) per
            camera; ``goal`` the same keys for the goal (``goal_of``). The action is float32 (5,)
            in [-1, 1] (clipped here). When the policy has a ``reset()`` method it is called
            before every episode.
        cameras: cameras whose images the policy sees (none: a state-based policy).
        video_dir: write MP4s here (20 fps): the first ``videos_per_task`` episodes of each task,
            the ``video_camera`` view at ``video_size`` px beside the goal image from the same
            camera. None: no videos.
        on_episode: called after every episode (progress).

    Raises:
        UnknownEnvError, ValueError (unknown task), RenderBackendError.
    """
    from tether.robot.video import VideoEncoder
    from tether.sim.render import OffscreenCamera

    for task in tasks:
        if not check_task(task):
            raise ValueError(f"{task!r} is not an evaluation task: one of {', '.join(TASKS)}")
    sim = OGBenchSim(name, cameras, image_size, eval_steps=max_episode_steps)
    env = sim.build("eval")
    video_cam = None
    if video_dir is not None:
        video_cam = OffscreenCamera(env._model, video_camera, video_size, video_size)
        original = env.render

        def render_goal(*args, **kwargs):  # also keep a goal frame for the video
            original(*args, **kwargs)
            sim._video_goal = video_cam.render(env._data)

        env.render = render_goal
    episodes = []
    try:
        for task in tasks:
            for j in range(episodes_per_task):
                ep_seed = seed + j
                values = sim.reset(task, ep_seed)
                if hasattr(policy, "reset"):
                    policy.reset()
                encoder = None
                if video_cam is not None and j < videos_per_task:
                    path = Path(video_dir) / f"{name}-{task}-seed{ep_seed}.mp4"
                    encoder = VideoEncoder(path, CONTROL_RATE_HZ)
                    goal_frame = sim._video_goal
                success, truncated = False, False
                try:
                    while True:
                        if encoder is not None:
                            encoder.add(np.concatenate([video_cam.render(env._data), goal_frame], axis=1))
                        if success or truncated:
                            break
                        obs = {k: v for k, v in values.items() if k == "observation.state"
                               or k.startswith("observation.images.")}
                        action = np.clip(np.asarray(policy(obs, goal_of(values)), np.float32), -1, 1)
                        values, success, truncated = sim.step(action)
                except BaseException:
                    if encoder is not None:
                        encoder.abort()
                    raise
                episode = EvalEpisode(task, ep_seed, success, sim.steps,
                                      encoder.close() if encoder is not None else None)
                episodes.append(episode)
                if on_episode is not None:
                    on_episode(episode)
    finally:
        if video_cam is not None:
            video_cam.close()
        sim.close()
    return EvalResult(name, episodes)
