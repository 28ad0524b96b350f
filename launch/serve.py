"""``tether serve``: run a robot server (the simulated MetaWorld robot by default)."""

from __future__ import annotations

import json
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tether.launch import UsageError
from tether.robot.drivers.metaworld import MetaWorldRobot
from tether.robot.drivers.perturbed import PerturbedRobot
from tether.robot.drivers.pointmass import PointMassRobot
from tether.robot.realtime import RealtimeError, pin_to_cpus, set_fifo_priority
from tether.robot.security import ServerKeys
from tether.robot.server import RobotServer
from tether.sim.metaworld import DEFAULT_TASKS


@dataclass
class ServeConfig:
    """Run a robot server: a driver behind ZeroMQ at its control rate."""

    address: str = "tcp://127.0.0.1:5555"
    """Where to bind: tcp://HOST:PORT (state on PORT+1) or ipc://PATH."""
    robot: Literal["metaworld", "arm", "ogbench", "ocbench", "pointmass", "dynamixel", "feetech", "franka"] = "metaworld"
    """Driver: metaworld (simulated Sawyer, MetaWorld v3 tasks), arm (tether's simulated
    OpenMANIPULATOR-X: reach, push), ogbench (an OGBench UR5e scene, see --env), ocbench (an OCBench
    block env, see --env), pointmass (numpy,
    for tests and link benchmarks), dynamixel (a DYNAMIXEL arm), feetech (a Feetech STS arm: SO-100 /
SO-101) or franka (a Franka FR3 / Panda through franky); the hardware drivers need --robot-config."""
    env: str = "scene"
    """--robot ogbench only: the OGBench env (scene, cube-single); its tasks are task1..task5
    (evaluation goals) and play; --max-episode-steps sets the play episode length. --robot ocbench:
    an OCBench env (block-lite-single, block-lite-double, ...; tether.sim.ocbench), tasks task1..;
    --max-episode-steps is its step limit."""
    robot_config: Path | None = None
    """JSON file of the hardware driver's settings (for dynamixel / feetech: the fields of
    tether.robot.drivers.dynamixel.DynamixelConfig / feetech.FeetechConfig: port, ids, low, high,
    home, calibration, ...; for franka: tether.robot.drivers.franka.FrankaConfig: host, action,
    limits, home, max_episode_steps, ...)."""
    tasks: tuple[str, ...] = DEFAULT_TASKS
    """Tasks the simulated robot can be reset to (default for --robot arm: reach push)."""
    action_mode: Literal["ee_delta", "joint"] = "ee_delta"
    """--robot arm only: ee_delta (tool displacement, m per tick) or joint (joint targets, rad)."""
    cameras: tuple[str, ...] = ()
    """Cameras to publish in every observation (observation.images.NAME). Simulators: camera
    names to render, e.g. corner topview (MetaWorld), front top (arm). Hardware: NAME=SOURCE as
    for tether teleop (front=0, wrist=/dev/video2, top=realsense:SERIAL; a video file plays in a
    loop), at their capture size; a frame older than 0.5 s ends the episode."""
    camera_size: str | None = None
    """Hardware cameras: capture size WIDTHxHEIGHT (default: the device's; a RealSense's 640x480)."""
    image_size: int = 128
    """Simulated cameras: resolution in pixels (square)."""
    max_episode_steps: int = 500
    """Episode length limit in control ticks."""
    rate_hz: float | None = None
    """Control rate; default: the robot spec's (80 Hz for MetaWorld, 50 Hz for arm)."""
    latency_ticks: int = 0
    """Simulated actuation latency, in control ticks (the sim as a stand-in for hardware)."""
    action_noise: float = 0.0
    """Std of Gaussian noise on every action (action units)."""
    obs_noise: float = 0.0
    """Std of Gaussian noise on observation.state."""
    server_key: Path | None = None
    """This server's secret key (NAME.key_secret from tether keys generate): enables CurveZMQ."""
    allowed_clients: Path | None = None
    """Folder of the public keys (.key) of clients allowed to connect (with --server-key)."""
    insecure: bool = False
    """Allow a non-loopback address without keys."""
    lockstep: bool = False
    """Simulators: tick as soon as the controller answers (faster than real time, no lost ticks)."""
    chunk_blend: Literal["latest", "ensemble"] = "latest"
    """How overlapping action chunks (RobotClient.send_chunk) run: latest runs the newest chunk
    covering a tick (Diffusion Policy's scheduler); ensemble averages every covering chunk with
    weights exp(-m i), i = 0 the oldest (ACT's temporal ensembling)."""
    chunk_ensemble_m: float = 0.01
    """m of --chunk-blend ensemble (ACT: 0.01)."""
    cpus: tuple[int, ...] = ()
    """Pin the server to these CPUs (e.g. --cpus 3: a core kept free of other work; Linux)."""
    fifo_priority: int | None = None
    """Run the server SCHED_FIFO at this priority (1-99; needs root, CAP_SYS_NICE or an rtprio
    limit): the control loop runs before every normal process whenever it is ready."""
    stats_json: Path | None = None
    """Write the server's counters (ticks, overruns, messages received, rejections by reason,
    safety clips) to this JSON file when it stops."""
    randomize: str | None = None
    """--robot arm only: domain randomization per episode, a preset (none, default, reality_gap:
    the stand-in real robot) or a JSON file (tether.sim.randomization)."""


HARDWARE = ("dynamixel", "feetech", "franka")


def make_hardware_robot(kind: str, robot_config: Path | None, rate_hz: float | None = None, **overrides):
    """A hardware arm driver (``kind``: dynamixel, feetech or franka) from its JSON config file,
    with ``rate_hz`` and ``overrides`` set over the file's fields.

    Raises:
        UsageError: no config file, or one that is not a JSON object of the config's fields.
    """
    if kind == "dynamixel":
        from tether.robot.drivers.dynamixel import DynamixelArm as Arm, DynamixelConfig as Config
    elif kind == "feetech":
        from tether.robot.drivers.feetech import FeetechArm as Arm, FeetechConfig as Config
    else:
        from tether.robot.drivers.franka import FrankaArm as Arm, FrankaConfig as Config
    if robot_config is None:
        needs = "host, action, limits" if kind == "franka" else "port, ids, limits, calibration"
        raise UsageError(f"--robot {kind} needs --robot-config ARM.json ({needs})")
    try:
        settings = json.loads(Path(robot_config).read_text())
        if not isinstance(settings, dict):
            raise ValueError("not a JSON object")
        if rate_hz is not None:
            settings["rate_hz"] = rate_hz
        return Arm(Config(**{**settings, **overrides}))
    except OSError:
        raise
    except (TypeError, ValueError) as e:
        raise UsageError(f"bad {kind} config {robot_config}: {e}") from e


def with_hardware_cameras(robot, specs: tuple[str, ...], size: str | None):
    """``robot`` publishing the cameras of ``specs`` (NAME=SOURCE, ``tether.launch.camera_args``)
    in its observations (``tether.robot.drivers.with_cameras.CameraRobot``).

    Raises:
        UsageError: a malformed camera argument or a name the robot already observes.
        tether.perception.cameras.CameraError: a camera cannot be opened (names it).
    """
    from tether.launch.camera_args import open_cameras
    from tether.robot.drivers.with_cameras import CameraRobot

    cameras = open_cameras(specs, size, robot.spec.control_rate_hz)
    try:
        return CameraRobot(robot, cameras)
    except ValueError as e:
        raise UsageError(f"--cameras: {e}") from e


def make_robot(cfg: ServeConfig):
    """The driver named by ``cfg.robot``, with latency and noise when asked for."""
    from tether.launch import UsageError  # a local name here: the ogbench branch imports it too

    if cfg.randomize is not None and cfg.robot != "arm":
        raise UsageError("--randomize is for --robot arm")
    if cfg.camera_size is not None and cfg.robot not in HARDWARE:
        raise UsageError("--camera-size is for hardware cameras; a simulator's take --image-size")
    if cfg.robot == "pointmass":
        robot = PointMassRobot(cfg.rate_hz or 100.0, cfg.max_episode_steps)
    elif cfg.robot in HARDWARE:
        robot = make_hardware_robot(cfg.robot, cfg.robot_config, cfg.rate_hz)
        problem = robot.calibration_problem() if hasattr(robot, "calibration_problem") else None
        if problem is not None:  # refused before anything binds or moves
            raise robot.error(problem)
        if cfg.cameras:
            robot = with_hardware_cameras(robot, cfg.cameras, cfg.camera_size)
    elif cfg.robot == "arm":
        from tether.robot.drivers.arm import ArmRobot

        tasks = ("reach", "push") if cfg.tasks == DEFAULT_TASKS else cfg.tasks
        from tether.sim.randomization import UnknownPresetError

        try:
            robot = ArmRobot(tasks, cfg.action_mode, cfg.max_episode_steps, True, cfg.cameras,
                             cfg.image_size, randomize=cfg.randomize)
        except UnknownPresetError as e:
            raise UsageError(str(e)) from e
    elif cfg.robot == "ogbench":
        from tether.launch import UsageError
        from tether.robot.drivers.ogbench import OGBenchRobot
        from tether.sim.ogbench import OGBenchNotInstalledError, UnknownEnvError

        try:
            robot = OGBenchRobot(cfg.env, cfg.cameras, cfg.image_size, cfg.max_episode_steps)
        except (UnknownEnvError, OGBenchNotInstalledError) as e:
            raise UsageError(str(e)) from e
    elif cfg.robot == "ocbench":
        from tether.robot.drivers.ocbench import OCBenchRobot
        from tether.sim.ocbench import OCBenchNotInstalledError
        from tether.sim.ocbench import UnknownEnvError as UnknownOCBenchEnv

        try:
            robot = OCBenchRobot(cfg.env, cfg.cameras, cfg.image_size, cfg.max_episode_steps)
        except (UnknownOCBenchEnv, OCBenchNotInstalledError) as e:
            raise UsageError(str(e)) from e
    else:
        robot = MetaWorldRobot(cfg.tasks, cfg.max_episode_steps, True, cfg.cameras, cfg.image_size)
    if cfg.latency_ticks or cfg.action_noise or cfg.obs_noise:
        robot = PerturbedRobot(robot, cfg.latency_ticks, cfg.action_noise, cfg.obs_noise)
    return robot


class StopFlag:
    """A stop request set from a signal handler, for ``RobotServer.run(stop)``. Not a
    ``threading.Event``: its ``set`` takes a lock, and a second signal arriving while the first
    handler holds it deadlocks the process (Ctrl-C reaches a server and its parent at once)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


def main(cfg: ServeConfig) -> None:
    """Entry point of ``tether serve``: run a robot driver behind a ZeroMQ robot server until Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s serve %(levelname)s %(message)s")
    keys = None
    if cfg.lockstep and cfg.robot in HARDWARE:
        raise UsageError("--lockstep is for simulators: hardware runs in real time")
    if cfg.chunk_ensemble_m < 0:
        raise UsageError(f"--chunk-ensemble-m must be >= 0, got {cfg.chunk_ensemble_m}")
    if cfg.server_key is not None:
        if cfg.allowed_clients is None:
            raise UsageError("--server-key needs --allowed-clients (a folder of client .key files)")
        keys = ServerKeys(cfg.server_key, cfg.allowed_clients)
    try:
        if cfg.cpus:
            pin_to_cpus(cfg.cpus)
        if cfg.fifo_priority is not None:
            set_fifo_priority(cfg.fifo_priority)
    except RealtimeError as e:
        raise UsageError(str(e)) from e
    server = RobotServer(
        make_robot(cfg), cfg.address, rate_hz=cfg.rate_hz, keys=keys, insecure=cfg.insecure,
        lockstep=cfg.lockstep, chunk_blend=cfg.chunk_blend, chunk_ensemble_m=cfg.chunk_ensemble_m,
    )
    stop = StopFlag()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stats = server.run(stop)
    logging.info("stopped: %s", stats)
    if cfg.stats_json is not None:
        cfg.stats_json.write_text(json.dumps(stats.to_dict(), indent=1))
