"""``tether collect``: record scripted demonstrations and play data through a robot server.

Two sources: MetaWorld's scripted experts (``--env metaworld``, the default) and OGBench's play
data (``--env ogbench:scene`` or ``ogbench:cube-single``, see ``collect_ogbench``).

The expert plays the teleoperator: it reads states from, and sends commands to, the robot server
with the same ``RobotClient`` a human device uses, while a ``Recorder`` subscribed to the server
writes the dataset. Episode k of a task starts from seed ``seed + k`` (MetaWorld randomizes the
object and goal positions by seed).

``--quality`` makes unlabelled, mixed-quality data for offline RL (as D4RL's and the RL-VLM-F
follow-up's datasets are made): ``expert`` adds Gaussian noise of std ``--expert-noise`` to the
expert's action, ``medium`` of std ``--medium-noise``, ``random`` sends uniform random actions,
``play`` reaches for random points of the workspace one after another with a random gripper (the
off-task motion of play data, Lynch et al. 2019: unlike zero-mean noise, it does not average out
of behaviour cloning), and ``mix`` draws one of the four per episode with ``--mix`` probabilities
(seeded).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import tyro

from tether.launch import UsageError, processes
from tether.launch.rerun_view import check_viewable, live_view
from tether.robot.client import RobotClient
from tether.robot.dataset import DatasetWriter
from tether.robot.recorder import Recorder
from tether.sim.metaworld import DEFAULT_TASKS

log = logging.getLogger(__name__)


@dataclass
class CollectConfig:
    """Record scripted-expert demonstrations from a simulated robot into a dataset."""

    dataset: tyro.conf.Positional[Path]
    """Dataset folder to write (LeRobotDataset v3.0 layout)."""
    tasks: tuple[str, ...] = DEFAULT_TASKS
    """MetaWorld v3 tasks to demonstrate."""
    episodes: int = 20
    """Episodes per task."""
    seed: int = 0
    """Seed of each task's first episode; episode k uses seed + k (with --resume, k counts on from
    the episodes of that task already in the dataset)."""
    cameras: tuple[str, ...] | None = None
    """Simulated cameras to record as video; default: corner (MetaWorld), front_pixels (OGBench)."""
    image_size: int = 64
    """Camera resolution in pixels (square)."""
    max_episode_steps: int = 200
    """Episode length limit in control ticks (MetaWorld's experts need < 150)."""
    resume: bool = False
    """Append --episodes more to an existing dataset; their seeds go on after its episodes, so a
    collection cut short is finished without recording an episode twice."""
    overwrite: bool = False
    """Replace an existing dataset."""
    quality: Literal["expert", "medium", "random", "play", "mix"] = "expert"
    """Data quality: expert, noisy expert (medium), random actions, random reaching (play), or a
    per-episode mix."""
    expert_noise: float = 0.0
    """Std of the Gaussian noise on expert episodes (action units; actions are clipped to limits)."""
    medium_noise: float = 0.6
    """Std of the Gaussian noise on medium episodes."""
    mix: tuple[float, ...] = (0.3, 0.4, 0.3)
    """Probabilities of expert, medium, random (and play) episodes with --quality mix."""
    env: str = "metaworld"
    """Source: metaworld (--tasks' experts), ogbench:scene / ogbench:cube-single (OGBench play
    data: --episodes episodes of --episode-steps ticks, task "play"), or ocbench:NAME (OCBench's
    scripted block policies, e.g. ocbench:block-lite-double: --episodes per task of the env, or of
    --tasks task1 ...)."""
    episode_steps: int = 1000
    """OGBench: play episode length in control ticks (OGBench's play datasets: 1000)."""
    oracle: Literal["plan", "markov"] = "plan"
    """OGBench behaviour policy: plan (OGBench's play data: keyframe plans, smoothed noise) or
    markov (OGBench's noisy data: closed-loop oracles, Gaussian action noise)."""
    noise: float = 0.1
    """OGBench: oracle noise level (OGBench's default 0.1)."""
    lockstep: bool = True
    """The simulated robot ticks as soon as the behaviour policy answers (``tether serve
    --lockstep``): collection runs as fast as the simulator renders, and no tick is held because
    a command came late. --no-lockstep collects in real time, as on hardware."""
    rate_hz: float | None = None
    """Server tick rate (Hz) without --lockstep (with it: the longest wait for a command); the
    dataset stays at the control rate (80 Hz MetaWorld, 20 Hz OGBench) whatever it is. Default:
    the control rate, except OGBench with cameras in real time: 10 Hz, as software EGL renders its
    scenes' meshes in ~30 ms a frame. Held ticks are counted and warned about."""
    rerun: bool = False
    """Live Rerun view (spawned viewer; pip install 'tether[rerun]'): cameras, commanded, applied
    and measured joints, episode starts and ends; fed from a queue, never from the loop's thread."""
    rerun_save: Path | None = None
    """Write the live view to this Rerun recording (FILE.rrd) instead of spawning a viewer;
    implies --rerun."""


QUALITIES = ("expert", "medium", "random", "play")
# MetaWorld's hand workspace (m, world frame: sawyer_xyz_base's hand_low / hand_high) and the
# gain of a waypoint reach (MetaWorld's experts move with p = 10: action 1 = 1 cm per tick).
PLAY_LOW, PLAY_HIGH = np.array([-0.4, 0.45, 0.06]), np.array([0.4, 0.9, 0.3])
PLAY_GAIN, PLAY_REACHED_M, PLAY_MAX_STEPS = 10.0, 0.02, 40
SOFTWARE_RENDER_RATE_HZ = 10.0  # OGBench with cameras: what a 2-core CPU renders without holds


def episode_qualities(cfg: CollectConfig, task_index: int) -> list[str]:
    """The quality of each episode of task number ``task_index`` (seeded by ``cfg.seed``)."""
    if cfg.quality != "mix":
        return [cfg.quality] * cfg.episodes
    p = np.asarray(cfg.mix, np.float64)
    if p.shape not in ((3,), (4,)) or (p < 0).any() or p.sum() <= 0:
        raise UsageError(f"--mix takes 3 or 4 non-negative probabilities (expert medium random [play]), "
                         f"not {cfg.mix}")
    rng = np.random.default_rng([cfg.seed, task_index])
    return [QUALITIES[i] for i in rng.choice(len(p), size=cfg.episodes, p=p / p.sum())]


def play_policy(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """Random reaching: the hand (state[:3], m) goes to a random point of the workspace, and on
    to a new one once within 2 cm or after 40 ticks, the gripper (action[3]) set at random per
    point; actions in [-1, 1]."""
    target = {"point": None, "grip": 0.0, "steps": 0}

    def act(state: np.ndarray) -> np.ndarray:
        hand = np.asarray(state[:3], np.float64)
        if (target["point"] is None or np.linalg.norm(target["point"] - hand) < PLAY_REACHED_M
                or target["steps"] >= PLAY_MAX_STEPS):
            target.update(point=rng.uniform(PLAY_LOW, PLAY_HIGH), grip=rng.uniform(-1, 1), steps=0)
        target["steps"] += 1
        move = np.clip(PLAY_GAIN * (target["point"] - hand), -1, 1)
        return np.append(move, target["grip"]).astype(np.float32)

    return act


def noisy(expert: Callable[[np.ndarray], np.ndarray], quality: str, cfg: CollectConfig,
          rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """The behaviour policy of one episode: state (39,) -> action (4,) in [-1, 1]."""
    if quality == "random":
        return lambda state: rng.uniform(-1, 1, 4).astype(np.float32)
    if quality == "play":
        return play_policy(rng)
    std = cfg.expert_noise if quality == "expert" else cfg.medium_noise
    if std == 0:
        return expert
    return lambda state: np.clip(expert(state) + rng.normal(0, std, 4), -1, 1).astype(np.float32)


@dataclass
class CollectResult:
    """Episodes and frames in the dataset, successes of the behaviour policy per task, wall time
    (s)."""

    episodes: int
    frames: int
    expert_successes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def recorded_per_task(writer: DatasetWriter) -> Counter:
    """Episodes already in ``writer``'s dataset, per task string (0 for a new dataset): a resumed
    collection's episode k of a task takes seed ``--seed`` + (that count) + k."""
    return Counter(task for episode in writer.episodes for task in episode["tasks"])


def collect(
    cfg: CollectConfig,
    logs: Path,
    on_episode: Callable[[str, bool], None] | None = None,
) -> CollectResult:
    """Start a robot server, record ``cfg.episodes`` expert episodes per task (MetaWorld) or
    ``cfg.episodes`` play episodes (OGBench), stop the server.

    Raises:
        UsageError: an unknown ``--env`` or OGBench env, or OGBench not installed.
        tether.sim.metaworld.UnknownTaskError: an unknown MetaWorld task.
    """
    if cfg.env.startswith("ocbench:"):
        return collect_ocbench(cfg, logs, on_episode)
    if cfg.env != "metaworld":
        return collect_ogbench(cfg, logs, on_episode)
    from tether.sim.metaworld import check_tasks, expert_policy, metaworld_spec

    check_tasks(cfg.tasks)
    if cfg.rerun or cfg.rerun_save is not None:
        check_viewable(cfg.rerun_save, "--rerun-save")  # before the dataset is made
    cameras = ("corner",) if cfg.cameras is None else cfg.cameras
    qualities = [episode_qualities(cfg, t) for t in range(len(cfg.tasks))]  # bad --mix fails here
    t0 = time.perf_counter()
    spec = metaworld_spec(cfg.tasks, cameras, cfg.image_size)
    writer = DatasetWriter(
        cfg.dataset, spec, spec.control_rate_hz, resume=cfg.resume, overwrite=cfg.overwrite
    )
    recorded = recorded_per_task(writer)
    view = live_view("collect", spec, cfg.rerun, cfg.rerun_save)
    address = processes.free_tcp_address()
    server = processes.start(
        ["serve", "--address", address, "--tasks", *cfg.tasks, "--cameras", *cameras,
         "--image-size", str(cfg.image_size), "--max-episode-steps", str(cfg.max_episode_steps),
         *(["--rate-hz", str(cfg.rate_hz)] if cfg.rate_hz else []),
         *(["--lockstep"] if cfg.lockstep else [])],
        logs / "serve-collect.log",
    )
    result = CollectResult(0, 0)
    try:
        processes.wait_for_server(address, server)
        recorder = Recorder(address, writer).start()
        with RobotClient(address, name="scripted-expert") as client:
            for t, task in enumerate(cfg.tasks):
                expert = expert_policy(task)
                result.expert_successes[task] = 0
                for k, quality in enumerate(qualities[t], start=recorded[task]):
                    act = noisy(expert, quality, cfg, np.random.default_rng([cfg.seed + k, t, 1]))
                    state = client.reset(task, cfg.seed + k)
                    while not state["done"]:
                        action = act(state["observation"]["observation.state"])
                        client.send_action(action)
                        if view is not None:  # after the send: it only queues
                            view.observe(state, action)
                        state = client.latest_state()
                    if view is not None:
                        view.observe(state)
                    result.expert_successes[task] += bool(state["success"])
                    if on_episode is not None:
                        on_episode(task, bool(state["success"]))
        expected = len(cfg.tasks) * cfg.episodes
        recorder.wait_for(expected, timeout_s=30)
        stats = recorder.stop()
        if stats.episodes_dropped or stats.episodes_written < expected:
            log.warning(
                "recorded %d of %d episodes (%d dropped)", stats.episodes_written, expected,
                stats.episodes_dropped,
            )
    finally:
        processes.stop(server)
        if view is not None:
            view.close()
    result.episodes = len(writer.episodes)
    result.frames = writer.total_frames
    result.seconds = time.perf_counter() - t0
    return result


def ogbench_env(cfg: CollectConfig) -> str:
    """The OGBench env of ``--env ogbench:NAME``.

    Raises:
        UsageError: ``--env`` is neither metaworld nor ogbench:NAME with a known NAME, or OGBench
            is not installed.
    """
    from tether.sim import ogbench

    kind, _, name = cfg.env.partition(":")
    if kind != "ogbench" or not name:
        raise UsageError(f"--env takes metaworld, ogbench:NAME (NAME one of "
                         f"{', '.join(ogbench.ENVS)}) or ocbench:NAME, not {cfg.env!r}")
    try:
        ogbench.check_env(name)
        ogbench.import_ogbench()
    except (ogbench.UnknownEnvError, ogbench.OGBenchNotInstalledError) as e:
        raise UsageError(str(e)) from e
    return name


def collect_ogbench(
    cfg: CollectConfig,
    logs: Path,
    on_episode: Callable[[str, bool], None] | None = None,
) -> CollectResult:
    """Record OGBench play data: ``cfg.episodes`` episodes of ``cfg.episode_steps`` ticks.

    OGBench's oracles (``tether.sim.ogbench.PlayPolicy``) play the teleoperator through a
    ``RobotClient``, subtask after subtask, while a ``Recorder`` writes the episodes (task
    ``play``; cameras as video; ``observation.state``, ``observation.qpos``,
    ``observation.qvel``). Episode k resets the scene with seed ``cfg.seed + k``, k counting on from
    the episodes already there with ``--resume``. A scene episode that fails OGBench's health check
    (the cube leaves the view) is discarded and retried with the next unused seed, as OGBench's
    generator does; each retry shifts the later episodes' seeds by one, so resuming a run that
    retried (``retried_episodes``) records that many seeds again. ``expert_successes`` counts
    achieved subtasks per kind (``<kind>`` and ``<kind>/started``); ``held_ticks`` counts steps
    whose applied action was not the one just sent (the command came late and the server held the
    robot: lower --rate-hz when it is large).

    Raises:
        UsageError: a bad ``--env``, or OGBench missing.
    """
    from tether.sim.ogbench import DEFAULT_CAMERA, PLAY, PlayPolicy, ogbench_spec, scene_healthy

    name = ogbench_env(cfg)
    if cfg.rerun or cfg.rerun_save is not None:
        check_viewable(cfg.rerun_save, "--rerun-save")  # before the dataset is made
    if cfg.episode_steps < 2:
        raise UsageError(f"--episode-steps must be at least 2, not {cfg.episode_steps}")
    cameras = (DEFAULT_CAMERA,) if cfg.cameras is None else cfg.cameras
    t0 = time.perf_counter()
    spec = ogbench_spec(name, cameras, cfg.image_size, goal=False)  # play has no goal
    policy = PlayPolicy(name, cfg.oracle, cfg.noise)
    writer = DatasetWriter(
        cfg.dataset, spec, spec.control_rate_hz, resume=cfg.resume, overwrite=cfg.overwrite
    )
    view = live_view("collect", spec, cfg.rerun, cfg.rerun_save)
    slow = cameras and not cfg.lockstep  # real time, but slower than this machine renders
    rate = cfg.rate_hz or (SOFTWARE_RENDER_RATE_HZ if slow else spec.control_rate_hz)
    address = processes.free_tcp_address()
    server = processes.start(
        ["serve", "--robot", "ogbench", "--env", name, "--address", address, "--cameras", *cameras,
         "--image-size", str(cfg.image_size), "--max-episode-steps", str(cfg.episode_steps),
         "--rate-hz", str(rate), *(["--lockstep"] if cfg.lockstep else [])],
        logs / "serve-collect.log",
    )
    if rate < spec.control_rate_hz:  # slower than real time on purpose: every tick is "late"
        logging.getLogger("tether.robot.recorder").addFilter(
            lambda record: not record.getMessage().startswith("recording below"))
    result = CollectResult(0, 0)
    held = retries = 0
    try:
        processes.wait_for_server(address, server)
        recorder = Recorder(address, writer).start()
        with RobotClient(address, name="ogbench-oracle") as client:
            seed = cfg.seed + recorded_per_task(writer)[PLAY]
            for _ in range(cfg.episodes):
                while True:
                    state = client.reset(PLAY, seed)
                    policy.reset(state["observation"], state["step"], seed)
                    seed += 1
                    healthy = True
                    while not state["done"]:
                        values = state["observation"]
                        if not scene_healthy(name, values["observation.qpos"]):
                            healthy = False
                            break
                        action = policy(values, state["step"])
                        client.send_action(action)
                        if view is not None:  # after the send: it only queues
                            view.observe(state, action)
                        state = client.latest_state()
                        # the server held the robot (our command came late) or skipped states
                        held += not np.array_equal(state["action"], action)
                    if healthy:
                        break
                    recorder.discard_episode()
                    retries += 1
                    log.info("unhealthy play episode (the cube left the view): retrying")
                if on_episode is not None:
                    on_episode(PLAY, True)
        recorder.wait_for(cfg.episodes + retries, timeout_s=30)
        stats = recorder.stop()
        if stats.episodes_written < cfg.episodes:
            log.warning("recorded %d of %d episodes (%d dropped)", stats.episodes_written,
                        cfg.episodes, stats.episodes_dropped - retries)
    finally:
        processes.stop(server)
        if view is not None:
            view.close()
    frames = max(1, writer.total_frames)
    if held > 0.05 * frames:
        log.warning("the robot held on %d of %d ticks (this machine did not keep up with the server's "
                    "rate): those frames have the hold action (zeros)", held, frames)
    for kind, n in policy.stats.started.items():
        result.expert_successes[kind] = policy.stats.achieved.get(kind, 0)
        result.expert_successes[f"{kind}/started"] = n
    result.expert_successes["held_ticks"] = held
    result.expert_successes["retried_episodes"] = retries
    result.episodes = len(writer.episodes)
    result.frames = writer.total_frames
    result.seconds = time.perf_counter() - t0
    return result


def collect_ocbench(
    cfg: CollectConfig,
    logs: Path,
    on_episode: Callable[[str, bool], None] | None = None,
) -> CollectResult:
    """Record OCBench demonstrations: ``cfg.episodes`` per task (the env's tasks, or ``--tasks``
    when given), OCBench's scripted controller (``tether.sim.ocbench.ScriptedPolicy``) playing the
    teleoperator through a ``RobotClient`` while a ``Recorder`` writes the episodes (state, MuJoCo
    state, cameras as video). Episode k of task t resets with seed ``cfg.seed + k`` (k counting on
    with ``--resume``) and seeds the controller with it. Each episode runs to OCBench's
    termination or the task's step limit; every episode is kept (``expert_successes`` counts the
    successful ones; OCBench's paper trains on those only).

    Raises:
        UsageError: a bad ``--env`` or task, or OCBench missing.
    """
    from tether.sim import ocbench

    name = cfg.env.partition(":")[2]
    try:
        ocbench.check_env(name)
        ocbench.import_ocbench()
        tasks = ocbench.tasks_of(name) if cfg.tasks == DEFAULT_TASKS else tuple(cfg.tasks)
        for task in tasks:
            ocbench.check_task(name, task)
    except (ocbench.UnknownEnvError, ocbench.OCBenchNotInstalledError, ValueError) as e:
        raise UsageError(str(e)) from e
    cameras = (ocbench.DEFAULT_CAMERA,) if cfg.cameras is None else cfg.cameras
    t0 = time.perf_counter()
    sim = ocbench.OCBenchSim(name)  # the spec's MuJoCo state sizes
    spec = ocbench.ocbench_spec(name, cameras, cfg.image_size, nq=sim.env._model.nq, nv=sim.env._model.nv)
    sim.close()
    policy = ocbench.ScriptedPolicy(name)
    writer = DatasetWriter(cfg.dataset, spec, spec.control_rate_hz, resume=cfg.resume, overwrite=cfg.overwrite)
    recorded = recorded_per_task(writer)
    limit = max(ocbench.episode_limit(name, task) for task in tasks)
    address = processes.free_tcp_address()
    server = processes.start(
        ["serve", "--robot", "ocbench", "--env", name, "--address", address, "--cameras", *cameras,
         "--image-size", str(cfg.image_size), "--max-episode-steps", str(limit),
         *(["--rate-hz", str(cfg.rate_hz)] if cfg.rate_hz else []), *(["--lockstep"] if cfg.lockstep else [])],
        logs / "serve-collect.log",
    )
    result = CollectResult(0, 0)
    try:
        processes.wait_for_server(address, server)
        recorder = Recorder(address, writer).start()
        with RobotClient(address, name="ocbench-scripted") as client:
            for task in tasks:
                result.expert_successes[task] = 0
                for k in range(recorded[task], recorded[task] + cfg.episodes):
                    state = client.reset(task, cfg.seed + k)
                    policy.reset(state["observation"], task, state["step"], cfg.seed + k)
                    while not state["done"]:
                        client.send_action(policy(state["observation"], state["step"]))
                        state = client.latest_state()
                    result.expert_successes[task] += bool(state["success"])
                    if on_episode is not None:
                        on_episode(task, bool(state["success"]))
        expected = len(tasks) * cfg.episodes
        recorder.wait_for(expected, timeout_s=30)
        stats = recorder.stop()
        if stats.episodes_written < expected:
            log.warning("recorded %d of %d episodes (%d dropped)", stats.episodes_written, expected,
                        stats.episodes_dropped)
    finally:
        processes.stop(server)
    result.episodes = len(writer.episodes)
    result.frames = writer.total_frames
    result.seconds = time.perf_counter() - t0
    return result


def planned_episodes(cfg: CollectConfig) -> int:
    """How many episodes ``cfg`` records (the progress bar's total): ``--episodes`` per task for
    MetaWorld and OCBench, ``--episodes`` for OGBench (a bad ``--env`` is left to ``collect``)."""
    if cfg.env == "metaworld":
        return cfg.episodes * len(cfg.tasks)
    if cfg.env.startswith("ocbench:"):
        from tether.sim import ocbench

        name = cfg.env.partition(":")[2]
        if name in ocbench.ENVS:
            return cfg.episodes * len(ocbench.tasks_of(name) if cfg.tasks == DEFAULT_TASKS else cfg.tasks)
    return cfg.episodes


def main(cfg: CollectConfig) -> None:
    """Entry point of ``tether collect``: record scripted-expert or oracle episodes into a dataset."""
    from tether.launch.progress import progress_bar

    logging.basicConfig(level=logging.WARNING)
    total = planned_episodes(cfg)
    # SIGTERM stops the robot server on the way out, as Ctrl-C does (SIGKILL: the server's own
    # death signal, see tether.launch.processes)
    with processes.sigterm_as_interrupt(), progress_bar() as progress:
        bar = progress.add_task("collect", total=total)
        result = collect(cfg, cfg.dataset.parent / "logs", lambda *_: progress.advance(bar))
    print(
        f"{result.episodes} episodes, {result.frames} frames in {cfg.dataset} "
        f"({result.seconds:.0f} s); "
        f"{'expert' if cfg.env == 'metaworld' else 'oracle subtask'} successes: {result.expert_successes}"
    )
