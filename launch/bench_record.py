"""``tether bench record``: can the recorder keep up with cameras at full rate?

A point-mass robot server runs in its own process at the cameras' rate, a controller thread of
this process answers every state with a command (as a teleoperator would), and a ``Recorder`` in
play mode writes the robot's stream plus ``--cameras`` synthetic cameras (``SyntheticCamera``:
free-running clocks, so their phase against the robot's ticks is arbitrary) into a dataset for
``--duration`` seconds, saving an episode every ``--episode-s`` seconds while recording goes on.

Reported: frames dropped per camera (a frame its reader came too late for, or that the matcher
had to skip or lost to an overflowing queue), frames repeated (a tick with no new frame), the
achieved frame rate of the dataset, late ticks of the robot, CPU use of this process and of the
server (in cores: CPU seconds per wall second), and the dataset's size in MB per minute.
"""

from __future__ import annotations

import os
import resource
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tether.launch import UsageError, processes


@dataclass
class RecordBench:
    """Benchmark recording: N synthetic cameras at a given size and fps, for a duration."""

    cameras: int = 2
    """Number of synthetic cameras."""
    size: str = "640x480"
    """Camera frame size, WIDTHxHEIGHT (pixels)."""
    fps: float = 30.0
    """Camera rate and control rate of the robot (Hz): the dataset's fps."""
    duration: float = 60.0
    """Seconds of recording."""
    episode_s: float = 20.0
    """Play mode: an episode is saved every this many seconds while recording continues."""
    out: Path | None = None
    """Keep the dataset here (default: a temporary folder, deleted)."""
    json: bool = False
    """Print the result as JSON only."""


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu_s(pid: int) -> float:
    """CPU seconds of another process so far (Linux ``/proc/<pid>/stat``: utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _folder_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6


def bench_record(cmd: RecordBench) -> dict:
    """Run the benchmark (module docstring) and return its result dict."""
    from tether.perception.cameras import SyntheticCamera
    from tether.robot.client import RobotClient, RobotLinkError
    from tether.robot.dataset import Dataset, DatasetWriter
    from tether.robot.drivers.pointmass import pointmass_spec
    from tether.robot.recorder import Recorder, camera_features
    from tether.robot.video import count_frames

    try:
        width, height = (int(v) for v in cmd.size.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size must be WIDTHxHEIGHT, e.g. 640x480, not {cmd.size!r}") from None
    cams = [SyntheticCamera(f"cam{i}", width, height, cmd.fps, seed=i) for i in range(cmd.cameras)]
    spec = camera_features(pointmass_spec(cmd.fps), cams)
    with tempfile.TemporaryDirectory() as tmp:
        root = cmd.out or Path(tmp) / "dataset"
        address = processes.free_tcp_address()
        server = processes.start(
            ["serve", "--robot", "pointmass", "--address", address, "--rate-hz", str(cmd.fps),
             "--max-episode-steps", "100000000"],
            Path(tmp) / "serve.log",
        )
        stop = threading.Event()
        try:
            processes.wait_for_server(address, server)
            with RobotClient(address, name="bench-teleop") as client:
                client.reset()

                def teleop() -> None:
                    k = 0
                    while not stop.is_set():
                        try:
                            state = client.next_state(timeout_s=0.1)
                        except RobotLinkError:
                            continue
                        k += 1
                        client.send_action(np.array([np.sin(k / 20), np.cos(k / 20)], np.float32) * 0.5,
                                           state["seq"])

                controller = threading.Thread(target=teleop, daemon=True)
                controller.start()
                writer = DatasetWriter(root, spec, cmd.fps, overwrite=cmd.out is not None)
                recorder = Recorder(address, writer, cameras=cams, play_episode_s=cmd.episode_s)
                cpu0, server_cpu0, t0 = _cpu_s(), _process_cpu_s(server.pid), time.monotonic()
                recorder.start()
                time.sleep(cmd.duration)
                recorder.check()
                wall = time.monotonic() - t0  # the span recorded; saving the last piece follows
                stats = recorder.stop()
                cpu = _cpu_s() - cpu0  # including that save: the whole cost of the recording
                server_cpu = _process_cpu_s(server.pid) - server_cpu0
                stop.set()
                controller.join()
        finally:
            stop.set()
            processes.stop(server)
        ds = Dataset(root)
        frames = ds.num_frames
        size_mb = _folder_mb(root)
        per_camera = {
            c.name: {
                "captured": c.frames,
                "dropped": c.dropped + stats.cameras[c.name].skipped + stats.cameras[c.name].lost,
                "repeated": stats.cameras[c.name].repeated,
                "used": stats.cameras[c.name].used,
            }
            for c in cams
        }
        videos_whole = all(  # every episode's videos hold exactly its frames
            count_frames(ds.video_path(key, i)) == ds.episodes[i]["length"]
            for i in range(len(ds)) for key in ds.video_keys
        )
    dropped = sum(c["dropped"] for c in per_camera.values())
    result = {
        "cameras": cmd.cameras,
        "size": [width, height],
        "fps": cmd.fps,
        "duration_s": round(wall, 3),
        "episodes": len(ds),
        "frames": frames,
        "achieved_fps": frames / wall,
        "frames_dropped": dropped,
        "frames_repeated": sum(c["repeated"] for c in per_camera.values()),
        "per_camera": per_camera,
        "late_ticks": stats.late_ticks,
        "gaps": stats.gaps,
        "cpu_cores": {"recorder": cpu / wall, "robot_server": server_cpu / wall},
        "mb_per_minute": size_mb / wall * 60,
        "cpu_count": os.cpu_count(),
    }
    result["checks"] = {
        "zero_frames_dropped": dropped == 0,
        "fps_within_1pct": result["achieved_fps"] >= 0.99 * cmd.fps,
        "videos_hold_every_frame": videos_whole,
    }
    return result


def print_result(r: dict) -> None:
    """One paragraph for people (``--json`` prints the dict)."""
    print(
        f"{r['cameras']} x {r['size'][0]}x{r['size'][1]} @ {r['fps']:g} fps for {r['duration_s']:.0f} s: "
        f"{r['frames']} frames in {r['episodes']} episodes, achieved {r['achieved_fps']:.2f} fps, "
        f"{r['frames_dropped']} frames dropped, {r['frames_repeated']} repeated, {r['late_ticks']} "
        f"late ticks; CPU {r['cpu_cores']['recorder']:.2f} cores (recorder) + "
        f"{r['cpu_cores']['robot_server']:.2f} (server); {r['mb_per_minute']:.1f} MB/min; {r['checks']}"
    )
