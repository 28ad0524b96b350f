"""``tether teleop``: drive a robot server with a teleop device, and record what happens.

::

    tether teleop --robot tcp://127.0.0.1:5555 --device keyboard
    tether teleop --robot ROBOT --device spacemouse --record data/pick --task "pick the cube" \\
        --cameras front=0 wrist=/dev/video2 --camera-size 640x480
    tether teleop --robot ROBOT --device leader --record data/so101 --cameras top=realsense:819612070123
    tether teleop --robot ROBOT --device gamepad --record data/play --play --episode-s 60

Each control tick the device is read with the newest state and its action is sent as the
command answering that state. With ``--record`` a ``Recorder`` writes the robot's stream (and the
cameras given here, captured on this machine) to a LeRobotDataset v3.0, crash-safely.

Episodic mode (default): the device's end-episode event keeps the episode and resets the robot
(a simulator to the next seed); re-record discards it and resets to the same seed; a simulator's
own ``done`` saves the episode and resets; stop keeps nothing in progress and quits. The e-stop
event trips the server's latched e-stop and discards the episode; end-episode then clears it and
starts the next one. Play mode (``--play``): one reset, then a continuous stream saved every
``--episode-s`` seconds; end-episode is ignored, stop saves the last piece.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


from tether.launch import UsageError
from tether.launch.camera_args import open_cameras
from tether.robot.teleop import END_EPISODE, ESTOP, RERECORD, STOP, TeleopConfig

log = logging.getLogger(__name__)


@dataclass
class TeleopCommand:
    """Teleoperate a robot server with a device (keyboard, spacemouse, gamepad, leader arm)."""

    robot: str
    """Address of the robot server (tether serve)."""
    device: Literal["keyboard", "spacemouse", "gamepad", "leader"] = "keyboard"
    """Teleop device."""
    record: Path | None = None
    """Record to this dataset folder (LeRobotDataset v3.0)."""
    task: str | None = None
    """Task string of recorded episodes, e.g. "pick up the cube" (default: a simulator's task
    name, else "default")."""
    sim_task: str | None = None
    """Simulator task to reset to (default: the server's first)."""
    seed: int = 0
    """A simulator's seed of the first episode; episode k uses seed + k."""
    cameras: tuple[str, ...] = ()
    """Cameras on this machine as NAME=SOURCE: an OpenCV device index, path or URL, or
    realsense[:SERIAL] for an Intel RealSense's colour at 30 fps (without a serial: the only one
    connected; pip install 'tether[realsense]')."""
    camera_size: str | None = None
    """Capture size WIDTHxHEIGHT (default: the device's; a RealSense's 640x480)."""
    play: bool = False
    """Play mode: no resets, the stream split into episodes of --episode-s."""
    episode_s: float = 30.0
    """Play mode: seconds per episode."""
    resume: bool = False
    """Append to an existing dataset."""
    client_key: Path | None = None
    """This client's secret key (.key_secret), for a server with CurveZMQ keys."""
    server_public_key: Path | None = None
    """The server's public key (.key), with --client-key."""
    rerun: bool = False
    """Live Rerun view (spawned viewer; pip install 'tether[rerun]'): the robot's cameras,
    commanded, applied and measured joints, e-stop, watchdog and operator events; fed from a queue,
    never from the control loop's thread."""
    rerun_save: Path | None = None
    """Write the live view to this Rerun recording (FILE.rrd) instead of spawning a viewer;
    implies --rerun."""
    teleop: TeleopConfig = field(default_factory=TeleopConfig)
    """Mapping from the device to the robot's action, and per-device settings."""


@dataclass
class SessionResult:
    """What a teleop session did: episodes saved and discarded, ticks driven, e-stops."""

    saved: int = 0
    discarded: int = 0
    ticks: int = 0
    estops: int = 0
    events: list[str] = field(default_factory=list)


def run_session(cmd: TeleopCommand, say=print) -> SessionResult:
    """Run one teleop session (module docstring); ``say`` prints operator messages.

    Raises:
        UsageError: bad camera or key arguments.
        tether.robot.client.RobotLinkError: the server does not answer.
        tether.robot.teleop.TeleopError: the device is missing or went away.
        tether.perception.cameras.CameraError: a camera is missing or stopped (names it).
    """
    from tether.launch.rerun_view import live_view
    from tether.robot.client import RobotClient
    from tether.robot.dataset import DatasetWriter
    from tether.robot.recorder import Recorder, camera_features
    from tether.robot.security import ClientKeys
    from tether.robot.teleop import make_device

    if cmd.client_key is not None and cmd.server_public_key is None:
        raise UsageError("--client-key needs --server-public-key")
    keys = ClientKeys(cmd.client_key, cmd.server_public_key) if cmd.client_key else None
    result = SessionResult()
    recorder = None
    with RobotClient(cmd.robot, name=f"teleop-{cmd.device}", keys=keys) as client:
        spec = client.spec
        if cmd.cameras and cmd.record is None:
            raise UsageError("--cameras are recorded: give --record DATASET")
        sim_task = cmd.sim_task or (spec.tasks[0] if spec.tasks else None)
        device = make_device(cmd.device, spec, cmd.teleop)
        view = live_view("teleop", spec, cmd.rerun, cmd.rerun_save)  # before anything moves
        if view is not None:
            tell = say

            def say(msg: str) -> None:  # the operator's messages on the view's timeline too
                tell(msg)
                view.note(msg)
        if cmd.record is not None:
            cameras = open_cameras(cmd.cameras, cmd.camera_size, spec.control_rate_hz)
            dataset_spec = camera_features(spec, cameras)
            writer = DatasetWriter(cmd.record, dataset_spec, spec.control_rate_hz, resume=cmd.resume)
            recorder = Recorder(cmd.robot, writer, cmd.task, cameras,
                                cmd.episode_s if cmd.play else None, keys).start()
        device.start()
        try:
            episode = 0
            state = client.reset(sim_task, cmd.seed + episode if spec.tasks else None)
            estopped = False
            say(f"teleop {cmd.device} on {cmd.robot}: episode {episode} started")
            while True:
                state = client.latest_state()
                command = device.read(state)
                if not estopped:
                    client.send_action(command.action, state["seq"])
                if view is not None:  # after the send: it only queues
                    view.observe(state, None if estopped else command.action, events=command.events)
                result.ticks += 1
                if recorder is not None:
                    recorder.check()
                events = list(command.events)
                if state["done"] and not cmd.play and not estopped and not events:
                    events = [END_EPISODE]  # the simulator ended it (success or time limit)
                result.events += events
                if ESTOP in events:
                    client.estop("teleop operator")
                    estopped = True
                    result.estops += 1
                    if recorder is not None and not cmd.play:
                        recorder.discard_episode()
                        result.discarded += 1
                    say("E-STOP: the robot holds. End-episode clears it and starts the next "
                        "episode; stop quits.")
                    continue
                if STOP in events:
                    break
                if cmd.play:
                    continue
                if END_EPISODE in events or RERECORD in events:
                    if recorder is not None and not estopped:
                        if RERECORD in events:
                            recorder.discard_episode()
                            result.discarded += 1
                        else:
                            recorder.end_episode()
                            result.saved += 1
                    if estopped:
                        client.clear_estop()
                        estopped = False
                    episode += RERECORD not in events
                    state = client.reset(sim_task, cmd.seed + episode if spec.tasks else None)
                    verb = "re-recording" if RERECORD in events else "saved; starting"
                    say(f"{verb} episode {episode}")
        finally:
            device.stop()
            if view is not None:
                view.close()
            if recorder is not None:
                stats = recorder.stop()
                if cmd.play:
                    result.saved = stats.episodes_written
                say(f"recorded {stats.episodes_written} episodes ({stats.frames_written} frames) "
                    f"to {cmd.record}; {stats.episodes_dropped} discarded")
    return result


def main(cmd: TeleopCommand) -> None:
    """Entry point of ``tether teleop``: drive a robot server by hand, optionally recording episodes."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.monotonic()
    result = run_session(cmd, say=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(f"teleop: {result.ticks} ticks in {time.monotonic() - t0:.0f} s, {result.saved} "
          f"episodes saved, {result.discarded} discarded, {result.estops} e-stops", file=sys.stderr)
