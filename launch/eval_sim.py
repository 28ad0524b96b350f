"""``tether eval --sim``: evaluate a policy directly in simulation, several envs in parallel.

Each episode runs in lock-step: observation -> policy -> the robot server's safety layer
(``SafetyFilter.check`` then ``limit``, from the driver's ``hold_action()`` at the episode's start)
-> one driver tick. That is what the robot server does at every tick when the command arrives in
time, with the same drivers (``tether.robot.drivers``), so a deterministic policy gives the same
episodes here and on a ``tether serve`` of the same simulator (``held_ticks`` 0 there).

Parallelism: ``--num-envs K`` worker processes (spawned: MuJoCo and onnxruntime are not fork-safe
once initialised; processes rather than threads, as MetaWorld steps in Python under the GIL), each
with its own env and ``PolicyRunner``; one job is one episode. Every episode reseeds its env (seed)
and its sampler noise (seed, task), so results do not depend on K or on the order of the jobs.

Videos: outcomes are only known at the end, so no episode is rendered while evaluating; the chosen
ones (``choose_videos``: successes and failures) are replayed with a camera afterwards, which
reproduces them exactly (checked: a replay that ends differently is reported in ``warnings``).

Adding a simulator: ``SIMS[name] = factory``; a factory takes (tasks, policy spec, command, camera
or None) and returns an ``EvalEnv`` (any object with ``spec``, ``reset``, ``step``, ``close``).
``DriverEnv`` adapts any ``tether.robot.driver.Robot``; a gymnasium env (e.g. tether's own MuJoCo
arm tasks) needs a small adapter to ``Observation`` (state under ``observation.state``).
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Literal, Protocol

import numpy as np

from tether.launch import UsageError
from tether.launch.eval import (
    EvalCommand, choose_videos, eval_tasks, load_runner, refusal_warnings, start_episode, summarize,
    video_name, write_results,
)
from tether.robot.chunks import ActionChunk, ChunkScheduler
from tether.robot.driver import Observation, Robot
from tether.robot.safety import SafetyFilter, SafetyViolation
from tether.robot.spec import RobotSpec


class EvalEnv(Protocol):
    """What direct evaluation needs of a simulator (one control tick per ``step``).

    ``reset(task, seed)`` returns the first observation (seeded: a seed names one initial
    condition); ``step(action)`` applies a policy action (spec's action shape, float32) and
    returns (observation after the tick, whether the tick held instead of acting);
    ``Observation.done`` ends the episode.
    """

    spec: RobotSpec

    def reset(self, task: str, seed: int) -> Observation: ...

    def step(self, action: np.ndarray) -> tuple[Observation, bool]: ...

    def close(self) -> None: ...


class DriverEnv:
    """A robot driver stepped as ``tether.robot.server.RobotServer`` steps it, without the clock.

    Args:
        robot: the driver (connected here; ``close`` disconnects it).

    A command the safety layer rejects (``SafetyViolation``) is dropped and the robot holds, as on
    the server; ``last_refusal`` then names the check (a key of the safety layer's counts:
    ``non_finite``, ``out_of_limits``, ``bad_shape``, ``bad_dtype``), else it is None.
    """

    def __init__(self, robot: Robot):
        self.robot = robot
        self.spec = robot.spec
        self.safety = SafetyFilter(self.spec)
        robot.connect()
        self._obs: Observation | None = None
        self._last_applied: np.ndarray | None = None
        self.last_refusal: str | None = None

    def reset(self, task: str, seed: int) -> Observation:
        self._obs = self.robot.reset(task, seed)
        self._last_applied = self.robot.hold_action()
        return self._obs

    def step(self, action: np.ndarray) -> tuple[Observation, bool]:
        before = dict(self.safety.counts)
        self.last_refusal = None
        try:
            checked = self.safety.check(action)
        except SafetyViolation:
            checked = None
            grown = [k for k, n in self.safety.counts.items() if n > before.get(k, 0)]
            self.last_refusal = grown[0] if grown else "bad_shape"
        if checked is not None:
            applied = self.safety.limit(checked, self._last_applied, self._obs.values)
            self.robot.act(applied)
        else:
            applied = self.robot.hold()
        if applied is not None:
            self._last_applied = applied
        self._obs = self.robot.observe()
        return self._obs, checked is None

    def close(self) -> None:
        self.robot.disconnect()


DEFAULT_MAX_EPISODE_STEPS = 500


def _cameras(policy_spec: RobotSpec, camera: str | None, image_size: int) -> tuple[tuple[str, ...], int]:
    """The cameras a simulator renders: those the policy reads (at their size, which then sets
    the videos' too), and ``camera`` for videos; and the image size."""
    prefix = "observation.images."
    needed = {k[len(prefix):]: f.shape[0] for k, f in policy_spec.observation.items() if k.startswith(prefix)}
    cameras = tuple(dict.fromkeys([*needed, *(() if camera is None else (camera,))]))
    return cameras, next(iter(needed.values()), image_size)


def _metaworld(tasks: list[str], policy_spec: RobotSpec, sim: SimSetup, camera: str | None) -> EvalEnv:
    from tether.robot.drivers.metaworld import MetaWorldRobot

    cameras, size = _cameras(policy_spec, camera, sim.image_size)
    steps = sim.max_episode_steps or DEFAULT_MAX_EPISODE_STEPS
    return DriverEnv(MetaWorldRobot(tuple(tasks), steps, True, cameras, size))


def _pointmass(tasks: list[str], policy_spec: RobotSpec, sim: SimSetup, camera: str | None) -> EvalEnv:
    from tether.robot.drivers.pointmass import PointMassRobot

    # The point mass integrates one control period per tick: its dynamics follow the rate, which
    # is the policy's (tether serve --robot pointmass --rate-hz R gives the same robot).
    return DriverEnv(PointMassRobot(policy_spec.control_rate_hz,
                                    sim.max_episode_steps or DEFAULT_MAX_EPISODE_STEPS))


def _ogbench(name: str) -> Callable[..., EvalEnv]:
    """OGBench's evaluation goals (task1..task5), each episode ending at success or OGBench's
    horizon (Park et al., 2024)."""

    def factory(tasks: list[str], policy_spec: RobotSpec, sim: SimSetup, camera: str | None) -> EvalEnv:
        from tether.robot.drivers.ogbench import OGBenchRobot

        cameras, size = _cameras(policy_spec, camera, sim.image_size)
        return DriverEnv(OGBenchRobot(name, cameras, size, eval_steps=sim.max_episode_steps))

    return factory


def _ocbench(name: str) -> Callable[..., EvalEnv]:
    """OCBench's evaluation protocol (``tether.sim.ocbench``): each episode of a task runs to
    OCBench's termination (success, failure, unhealthy) or the task's step limit."""

    def factory(tasks: list[str], policy_spec: RobotSpec, sim: SimSetup, camera: str | None) -> EvalEnv:
        from tether.robot.drivers.ocbench import OCBenchRobot

        cameras, size = _cameras(policy_spec, camera, sim.image_size)
        return DriverEnv(OCBenchRobot(name, cameras, size, sim.max_episode_steps))

    return factory


# name -> (factory, default camera for videos or None)
SIMS: dict[str, tuple[Callable[..., EvalEnv], str | None]] = {
    "metaworld": (_metaworld, "corner"),
    "pointmass": (_pointmass, None),
    "ogbench:scene": (_ogbench("scene"), "front_pixels"),
    "ogbench:cube-single": (_ogbench("cube-single"), "front_pixels"),
    **{f"ocbench:{name}": (_ocbench(name), "front") for name in
       ("block-lite-single", "block-lite-double", "block-lite-triple", "block-single", "block-double")},
}


@dataclass(frozen=True)
class SimSetup:
    """What a worker needs to build its runner and envs (picklable)."""

    sim: str
    onnx: str
    tasks: tuple[str, ...]
    max_episode_steps: int | None  # None: the simulator's own horizon
    image_size: int
    action_steps: int = 1  # actions of a chunk executed per policy call
    chunk_blend: Literal["latest", "ensemble"] = "latest"  # see tether.robot.chunks
    chunk_ensemble_m: float = 0.01
    deterministic: bool = False  # zero sampler noise
    fixed_goal: dict | None = None  # --goal-image / --goal-text (PolicyRunner.fix_goal's arguments)
    critic: str | None = None  # --critic / --candidates (PolicyRunner's value-guided sampling)
    candidates: int = 1


def run_sim_episode(env: EvalEnv, runner, task: str, seed: int, camera_key: str | None,
                    action_steps: int = 1, chunk_blend: Literal["latest", "ensemble"] = "latest",
                    chunk_ensemble_m: float = 0.01) -> dict:
    """One lock-stepped episode; returns success, return, length (ticks), held_ticks (every one
    held because the safety layer refused the tick's action: also ``held_refused``), refused
    (reason -> ticks, from the env's ``last_refusal``), latencies (s, per policy call) and frames
    (the camera's, uint8 [H, W, 3] each, if ``camera_key``).

    The policy is asked for its chunk every ``action_steps`` ticks (it observes the states in
    between); each tick runs the action that a ``ChunkScheduler`` (the robot server's) blends
    from the chunks covering it, on a grid of one tick: ``latest`` runs the newest chunk (K = 1:
    every chunk's first action), ``ensemble`` averages every covering chunk with weights
    exp(-m i), i = 0 the oldest (ACT's temporal ensembling, Zhao et al., RSS 2023; m = 0.01)."""
    start_episode(runner, task, seed)
    obs = env.reset(task, seed)
    frames, latencies = [], []
    scheduler = ChunkScheduler(chunk_blend, chunk_ensemble_m, interpolate=False)
    total, held, length = 0.0, 0, 0
    refused: dict[str, int] = {}
    while True:
        if camera_key is not None:
            frames.append(obs.values[camera_key])
        # The server clears ``done`` at a reset: an episode has at least one tick.
        if length > 0 and obs.done:
            break
        if length % action_steps == 0:
            t0 = time.perf_counter()
            scheduler.add(ActionChunk(runner.act_chunk(obs.values), t0=length, dt=1.0))
            latencies.append(time.perf_counter() - t0)
        else:
            runner.observe(obs.values)
        obs, was_held = env.step(scheduler.action_at(length))
        total += float(obs.reward)
        held += was_held
        if was_held:
            reason = getattr(env, "last_refusal", None) or "refused"
            refused[reason] = refused.get(reason, 0) + 1
        length += 1
    return {"success": bool(obs.success), "return": total, "length": length, "held_ticks": held,
            "held_refused": held, "refused": refused, "latencies": latencies, "frames": frames}


_worker: dict = {}


def _get(setup: SimSetup, camera: str | None):
    """This process' runner and env (built once per process, per camera)."""
    from tether.robot.runner import PolicyRunner

    if "runner" not in _worker:
        _worker["runner"] = PolicyRunner(setup.onnx, deterministic=setup.deterministic, critic=setup.critic,
                                         candidates=setup.candidates)
        if setup.fixed_goal:
            _worker["runner"].fix_goal(**setup.fixed_goal)
    runner = _worker["runner"]
    key = ("env", camera)
    if key not in _worker:
        factory, _ = SIMS[setup.sim]
        _worker[key] = factory(list(setup.tasks), runner.spec, setup, camera)
    return runner, _worker[key]


def _job(setup: SimSetup, task: str, index: int, seed: int, camera: str | None) -> dict:
    runner, env = _get(setup, camera)
    r = run_sim_episode(env, runner, task, seed, None if camera is None else f"observation.images.{camera}",
                        setup.action_steps, setup.chunk_blend, setup.chunk_ensemble_m)
    return {"task": task, "index": index, "seed": seed, **r}


def _close_worker() -> None:
    for key in [k for k in _worker if isinstance(k, tuple)]:
        _worker.pop(key).close()


def _run_jobs(setup: SimSetup, jobs: list[tuple], num_envs: int, on_done) -> list[dict]:
    """Run episode jobs (task, index, seed, camera) inline (K = 1) or in K spawned workers."""
    results = []
    if num_envs == 1 or len(jobs) == 1:
        for job in jobs:
            results.append(_job(setup, *job))
            on_done(results[-1])
        return results
    with ProcessPoolExecutor(min(num_envs, len(jobs)), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_job, setup, *job) for job in jobs]
        for future in as_completed(futures):
            results.append(future.result())
            on_done(results[-1])
    return results


def evaluate_sim(cmd: EvalCommand, on_episode=None) -> dict:
    """Direct-simulation mode: run, write ``cmd.out/eval.*``; returns the content of eval.json.

    Raises:
        UsageError: a camera the simulator lacks. SpecMismatchError: the policy does not fit the
        simulated robot. tether.sim.metaworld.UnknownTaskError: a task MetaWorld lacks.
    """
    from tether.robot.video import write_mp4

    cmd.out.mkdir(parents=True, exist_ok=True)
    runner, onnx_path, checkpoint = load_runner(cmd, cmd.out)
    factory, default_camera = SIMS[cmd.sim]
    camera = cmd.camera or default_camera
    if cmd.camera is not None and default_camera is None:
        raise UsageError(f"--camera {cmd.camera}: the {cmd.sim} simulator has no cameras")
    tasks = list(cmd.tasks or runner.tasks)
    setup = SimSetup(cmd.sim, str(onnx_path), tuple(tasks), cmd.max_episode_steps, cmd.image_size,
                     cmd.action_steps, cmd.chunk_blend, cmd.chunk_ensemble_m, cmd.deterministic,
                     runner.fixed_goal or None, None if runner.critic is None else str(runner.critic.path),
                     runner.candidates)
    # Check the policy against the simulated robot here, before any worker starts.
    _worker["runner"] = runner
    _, env = _get(setup, None)
    tasks = eval_tasks(cmd, runner, env.spec)
    setup = dataclasses.replace(setup, tasks=tuple(tasks))
    env.spec.check_policy(runner.spec, tuple(tasks))
    if camera is not None and cmd.videos_per_task > 0:
        key = f"observation.images.{camera}"
        try:
            probe = factory(tasks[:1], runner.spec, setup, camera)
        except ValueError as e:  # e.g. OffscreenCamera: the camera is not in the model
            raise UsageError(f"--camera {camera}: {e}") from e
        if key not in probe.spec.observation:
            raise UsageError(f"--camera {camera}: not a camera of the {cmd.sim} simulator")
        probe.close()

    total = len(tasks) * cmd.episodes
    t0 = time.perf_counter()
    jobs = [(task, k, cmd.seed + k, None) for task in tasks for k in range(cmd.episodes)]
    done = (lambda r: on_episode(r["task"], r["success"], total)) if on_episode else (lambda r: None)
    raw = _run_jobs(setup, jobs, cmd.num_envs, done)
    order = {t: i for i, t in enumerate(tasks)}
    raw.sort(key=lambda r: (order[r["task"]], r["index"]))
    eval_s = time.perf_counter() - t0
    latencies = [x for r in raw for x in r["latencies"]]
    episodes = [
        {k: r[k] for k in ("task", "index", "seed", "success", "return", "length", "held_ticks",
                           "held_refused", "refused")}
        | {"video": None}
        for r in raw
    ]
    refused: dict[str, int] = {}
    for e in episodes:
        for reason, n in e["refused"].items():
            refused[reason] = refused.get(reason, 0) + n
    # lock-stepped: every held tick is a refused action, every tick ran one of the policy's
    warnings = refusal_warnings(episodes, refused, sum(e["length"] for e in episodes), late=False)
    if camera is not None and cmd.videos_per_task > 0:
        chosen = [e for t in tasks for e in choose_videos([e for e in episodes if e["task"] == t],
                                                          cmd.videos_per_task)]
        replays = _run_jobs(setup, [(e["task"], e["index"], e["seed"], camera) for e in chosen],
                            cmd.num_envs, lambda r: None)
        by_key = {(r["task"], r["index"]): r for r in replays}
        for e in chosen:
            r = by_key[(e["task"], e["index"])]
            if (r["success"], r["length"], r["return"]) != (e["success"], e["length"], e["return"]):
                warnings.append(f"{e['task']} episode {e['index']}: the filmed replay ended "
                                "differently from the evaluated episode (nondeterministic policy or sim)")
            path = Path(cmd.out) / "videos" / video_name(e["task"], e)
            e["video"] = str(write_mp4(path, np.stack(r["frames"]), runner.spec.control_rate_hz))
    _close_worker()
    extra = {
        "sim": cmd.sim,
        "num_envs": cmd.num_envs,
        "onnx": str(onnx_path),
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "eval_s": eval_s,
        "warnings": warnings,
        "safety_refusals": refused,
    }
    return write_results(cmd.out, summarize(cmd, "sim", tasks, episodes, latencies, extra))
