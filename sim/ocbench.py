"""OCBench adapter: block-stacking envs on CPU MuJoCo, their scripted policies as teleoperators,
robot spec and evaluation protocol.

OCBench (Park and Levine, "Behavioral Cloning Mystery", 2026, seohong.me/projects/ocbench;
PyPI ``ocbench`` 1.0.2, github.com/seohongpark/ocbench) is a benchmark for behavioural cloning:
scripted policies that mimic human demonstrations (a per-episode speed drawn from a profile,
randomized keyframe plans with curved paths, tilts, optional holds, and high-level "mistakes":
with p = 0.1 a subgoal moves a random cube elsewhere first), so the data is multimodal and noisy.
Its 28 tasks in 5 families (block, chamber, switch, hanoi, bowling) run on GPU (MJWarp, the
default) or on CPU (``-cpu-`` ids, used here); ``lite`` variants have 10 Hz control (0.1 s, action
deltas x 5) and short horizons. Its evaluation (``impls/utils/evaluation.py``): an episode runs
until termination (success, failure or an unhealthy state: an object 20 cm outside the
workspace) or the task's step limit; success is ``info['success']`` at the end; the paper's runs
use 500 episodes, action chunks of 25 run open-loop, and train on successful episodes only.

tether serves the block family (``BlockEnv``), whose scripted controller needs only the MuJoCo
state (the other families' controllers read state kept outside MuJoCo, e.g. switch latches):

==========================  =================================  =========  ============
tether env                  OCBench CPU id                     tasks      step limit
==========================  =================================  =========  ============
``block-lite-single``       ``block-cpu-lite-single-task1-v0``  task1      200
``block-lite-double``       ``block-cpu-lite-double-task*-v0``  task1, 2   400
``block-lite-triple``       ``block-cpu-lite-triple-task*-v0``  task1, 2   600
``block-single``            ``block-cpu-single-task1-v0``       task1      1250
``block-double``            ``block-cpu-double-task*-v0``       task1, 2   2500
==========================  =================================  =========  ============

Tasks (``BlockEnv.set_tasks``): single task1 moves the cube to the table's centre; double / triple
task1 places each cube at its fixed target; task2 ``stack_anywhere`` stacks them anywhere. The
task is fixed per evaluation episode, so the policies are task-conditioned BC, not goal-conditioned.

Control: 7 normalized values in [-1, 1], joint-position deltas of the 6 UR5e joints (1.0 = 0.18,
0.18, 0.18, 0.36, 0.36, 0.36 rad, x 5 in lite) and of the gripper opening (1.0 = 0.12 of its
range, x 5 in lite), at 50 Hz (10 Hz lite). ``observation.state`` is OCBench's state observation,
float32: joint positions (rad, 6) and velocities (rad/s, 6), effector x, y, z in decimetres from
the workspace centre, cos and sin of its yaw, gripper opening x 3, pad contact (0..1), and per cube
its position (same transform), quaternion (w, x, y, z), cos and sin of its yaw. The robot also
publishes ``observation.qpos`` / ``observation.qvel`` (the MuJoCo state, which the scripted
teleoperator reads) and camera frames.
"""

from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tether.robot.spec import Feature, RobotSpec

INSTALL_HINT = "pip install 'tether[ocbench]'"
DEFAULT_CAMERA = "front_pixels"
STATE_UNIT = "rad|rad/s|dm|scaled"
_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3")
ACTION_NAMES = (*(f"d{j}" for j in _JOINTS), "dgripper")
_PROPRIO = (
    *(f"{j}_pos" for j in _JOINTS), *(f"{j}_vel" for j in _JOINTS),
    "effector_x", "effector_y", "effector_z", "effector_yaw_cos", "effector_yaw_sin",
    "gripper_opening", "gripper_contact",
)


def _cube(i: int) -> tuple[str, ...]:
    return (f"cube{i}_x", f"cube{i}_y", f"cube{i}_z", f"cube{i}_qw", f"cube{i}_qx", f"cube{i}_qy",
            f"cube{i}_qz", f"cube{i}_yaw_cos", f"cube{i}_yaw_sin")


@dataclass(frozen=True)
class EnvInfo:
    """One OCBench env tether serves: its CPU gym id per task, cube count and lite flag."""

    family: str
    kind: str
    cubes: int
    lite: bool
    tasks: int

    def gym_id(self, task: int) -> str:
        return f"{self.family}-cpu-{'lite-' if self.lite else ''}{self.kind}-task{task}-v0"

    @property
    def state_names(self) -> tuple[str, ...]:
        return _PROPRIO + tuple(n for i in range(self.cubes) for n in _cube(i))


ENVS: dict[str, EnvInfo] = {
    "block-lite-single": EnvInfo("block", "single", 1, True, 1),
    "block-lite-double": EnvInfo("block", "double", 2, True, 2),
    "block-lite-triple": EnvInfo("block", "triple", 3, True, 2),
    "block-single": EnvInfo("block", "single", 1, False, 1),
    "block-double": EnvInfo("block", "double", 2, False, 2),
}


class UnknownEnvError(ValueError):
    """The name is not an OCBench env tether serves."""


class OCBenchNotInstalledError(ImportError):
    """The ``ocbench`` package (the ``tether[ocbench]`` extra) is missing."""


def check_env(name: str) -> EnvInfo:
    """The ``EnvInfo`` of ``name``.

    Raises:
        UnknownEnvError: one line naming the envs tether serves (and a close match).
    """
    if name not in ENVS:
        close = difflib.get_close_matches(name, ENVS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UnknownEnvError(f"unknown OCBench env {name!r}{hint} (tether serves: {', '.join(ENVS)})")
    return ENVS[name]


def tasks_of(name: str) -> tuple[str, ...]:
    """``task1``..``taskK`` of env ``name``."""
    return tuple(f"task{k}" for k in range(1, check_env(name).tasks + 1))


def check_task(name: str, task: str) -> int:
    """The OCBench task id (1..K) of ``task``.

    Raises:
        ValueError: a task the env lacks (one line, naming its tasks).
    """
    tasks = tasks_of(name)
    if task not in tasks:
        raise ValueError(f"unknown task {task!r} of OCBench {name}: one of {', '.join(tasks)}")
    return tasks.index(task) + 1


def import_ocbench():
    """The ``ocbench`` module (importing it registers its gymnasium ids).

    Raises:
        OCBenchNotInstalledError: with the install command.
    """
    from tether.sim.render import load_triton_before_gl

    load_triton_before_gl()  # dm_control (under OCBench) opens its GL backend at import
    try:
        import ocbench
    except ImportError as e:
        raise OCBenchNotInstalledError(f"OCBench is not installed ({e}): {INSTALL_HINT}") from e
    return ocbench


def make_env(name: str):
    """An OCBench CPU env (unwrapped: tether keeps the step limit), compiled by a first reset.

    Raises:
        UnknownEnvError, OCBenchNotInstalledError.
    """
    import gymnasium

    info = check_env(name)
    import_ocbench()
    env = gymnasium.make(info.gym_id(1)).unwrapped
    env.reset(seed=0)
    return env


def episode_limit(name: str, task: str) -> int:
    """OCBench's step limit of ``task`` of ``name`` (its gym spec's ``max_episode_steps``)."""
    import gymnasium

    import_ocbench()
    return int(gymnasium.spec(check_env(name).gym_id(check_task(name, task))).max_episode_steps)


def ocbench_spec(name: str, cameras: tuple[str, ...] = (DEFAULT_CAMERA,), image_size: int = 64,
                 sim_state: bool = True, nq: int | None = None, nv: int | None = None) -> RobotSpec:
    """The robot spec of OCBench env ``name`` (units in the module docstring); ``nq``/``nv``: the
    MuJoCo state sizes (built from an env when None and ``sim_state``).

    Raises:
        UnknownEnvError.
    """
    info = check_env(name)
    dim = len(info.state_names)
    observation = {"observation.state": Feature("float32", (dim,), info.state_names, STATE_UNIT)}
    if sim_state:
        if nq is None or nv is None:
            env = make_env(name)
            nq, nv = env._model.nq, env._model.nv
        observation["observation.qpos"] = Feature("float32", (nq,), unit="m|rad|quat")
        observation["observation.qvel"] = Feature("float32", (nv,), unit="m/s|rad/s")
    for cam in cameras:
        observation[f"observation.images.{cam}"] = Feature("uint8", (image_size, image_size, 3), unit="pixel")
    action = Feature("float32", (7,), ACTION_NAMES, "normalized", (-1.0,) * 7, (1.0,) * 7)
    rate = 10.0 if info.lite else 50.0  # control_timestep 0.1 s (lite) or 0.02 s
    return RobotSpec(f"ocbench-{name}", rate, observation, action, tasks=tasks_of(name))


class OCBenchSim:
    """One OCBench env stepped one control period at a time, with cameras.

    Args:
        name: a key of ``ENVS``. cameras: rendered each step (uint8 [image_size, image_size, 3]).
        max_episode_steps: step limit; None: OCBench's for the task.

    ``reset(task, seed)`` -> observation values; ``step(action)`` -> (values, success, done).
    An episode ends at termination (success, failure, unhealthy: OCBench's) or the step limit.
    """

    def __init__(self, name: str, cameras: tuple[str, ...] = (), image_size: int = 64,
                 max_episode_steps: int | None = None):
        self.name = name
        self.env = make_env(name)
        model = self.env._model
        self.spec = ocbench_spec(name, cameras, image_size, nq=model.nq, nv=model.nv)
        self.cameras = tuple(cameras)
        self.max_episode_steps = max_episode_steps
        self._cams = []
        if cameras:
            from tether.sim.render import OffscreenCamera

            self._cams = [OffscreenCamera(model, c, image_size, image_size) for c in cameras]
        self.steps, self.limit = 0, 0

    def _values(self, ob: np.ndarray) -> dict[str, np.ndarray]:
        data = self.env._data
        values = {"observation.state": np.asarray(ob, np.float32),
                  "observation.qpos": data.qpos.astype(np.float32),
                  "observation.qvel": data.qvel.astype(np.float32)}
        for cam, name in zip(self._cams, self.cameras):
            values[f"observation.images.{name}"] = cam.render(data)
        return values

    def reset(self, task: str, seed: int) -> dict[str, np.ndarray]:
        """Start an episode of ``task`` from seed ``seed`` (names the initial state exactly).

        Raises:
            ValueError: an unknown task.
        """
        k = check_task(self.name, task)
        ob, _ = self.env.reset(seed=int(seed), options=dict(task_id=k))
        self.steps = 0
        self.limit = self.max_episode_steps or episode_limit(self.name, task)
        return self._values(ob)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], bool, bool]:
        """Apply one action (float32 (7,), clipped to [-1, 1]): (values, success, episode over)."""
        ob, _, terminated, _, info = self.env.step(np.clip(np.asarray(action, np.float64), -1, 1))
        self.steps += 1
        success = bool(info["success"])
        return self._values(ob), success, bool(terminated) or self.steps >= self.limit

    def close(self) -> None:
        for cam in self._cams:
            cam.close()
        self.env.close()


class ScriptedPolicy:
    """OCBench's scripted block controller (``ocbench.oracles.BlockController``: speed profile
    0.7-1.5, p_mistake 0.1) as a teleoperator: published observation values -> action.

    It sees only what the robot server publishes (``observation.qpos``, ``observation.qvel``,
    ``observation.state`` and the episode step): a local env of the same task (no physics stepped
    in it) is set to the published state each step and the controller reads its info, as
    OCBench's data generator reads the env it steps. The controller draws from numpy's global
    generator; each ``ScriptedPolicy`` swaps its own seeded state in around it.

    Raises:
        UnknownEnvError, OCBenchNotInstalledError.
    """

    def __init__(self, name: str, p_mistake: float = 0.1):
        check_env(name)
        self.name = name
        self.p_mistake = p_mistake
        self.env = make_env(name)
        self.dt = float(self.env._control_timestep)
        self._rs = np.random.RandomState(0)
        self._controller = None

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
        env = self.env
        env.set_state(np.asarray(values["observation.qpos"], np.float64),
                      np.asarray(values["observation.qvel"], np.float64))
        env._data.time = step * self.dt  # the plans are indexed by time
        info = env.compute_ob_info()
        # contact forces come from a physics step, which the local env never takes
        contact = values["observation.state"][_PROPRIO.index("gripper_contact")]
        info["proprio/gripper_contact"] = np.array([contact], np.float64)
        return info

    def reset(self, values: dict[str, np.ndarray], task: str, step: int, seed: int) -> None:
        """Start an episode of ``task`` from the published ``values``; ``seed`` makes it reproducible."""
        from ocbench.oracles import BlockController

        self._rs.seed(int(seed) % 2**32)
        self.env.reset(seed=int(seed), options=dict(task_id=check_task(self.name, task)))
        info = self._sync(values, step)
        with self._global_rng():
            self._controller = BlockController(env=self.env, p_mistake=self.p_mistake)
            self._controller.reset(None, info, transition_idx=0)

    def __call__(self, values: dict[str, np.ndarray], step: int) -> np.ndarray:
        """The action (float32 (7,), in [-1, 1]) for the published ``values`` at episode ``step``.

        Raises:
            RuntimeError: before ``reset``.
        """
        if self._controller is None:
            raise RuntimeError("reset() before acting")
        info = self._sync(values, step)
        with self._global_rng():
            action = self._controller.select_action(None, info)
        return np.clip(np.asarray(action, np.float64), -1, 1).astype(np.float32)
