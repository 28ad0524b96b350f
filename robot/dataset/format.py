"""The LeRobotDataset v3.0 on-disk layout, as tether writes and reads it.

::

    meta/info.json                                  fps, features, counts, path templates
    meta/stats.json                                 per-feature min/max/mean/std/count
    meta/tasks.parquet                              task string (index) -> task_index
    meta/episodes/chunk-000/file-000.parquet        one row per episode: length, tasks, where
                                                    its rows and video frames are, its stats
    data/chunk-NNN/file-NNN.parquet                 frames: one column per feature
    videos/<video key>/chunk-NNN/file-NNN.mp4       camera frames

(LeRobot, ``src/lerobot/datasets/utils.py``, codebase version v3.0.) tether writes one data file
and one video file per episode (a layout v3.0 allows: an episode's rows are located by
``data/file_index`` and ``dataset_from_index``/``dataset_to_index``, its frames by
``videos/<key>/from_timestamp``), because a file is then complete the moment it is renamed into
place, which is what makes recording crash-safe. ``info.json`` also carries tether's robot spec
under the key ``tether``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tether.robot.spec import RobotSpec

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"

# Columns every frame has besides the robot's features (LeRobot's DEFAULT_FEATURES).
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
# Per-transition outcomes recorded from the robot server (LeRobot's ``next.*`` convention).
OUTCOME_FEATURES: dict[str, dict[str, Any]] = {
    "next.reward": {"dtype": "float32", "shape": [1], "names": None},
    "next.success": {"dtype": "bool", "shape": [1], "names": None},
    "next.done": {"dtype": "bool", "shape": [1], "names": None},
}


def features_from_spec(spec: RobotSpec, fps: float) -> dict[str, dict[str, Any]]:
    """LeRobot feature descriptions of a spec's observations and action (images as video)."""
    features: dict[str, dict[str, Any]] = {}
    for key, f in {**spec.observation, "action": spec.action}.items():
        if f.is_image:
            h, w, c = f.shape
            features[key] = {
                "dtype": "video",
                "shape": [h, w, c],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.height": h,
                    "video.width": w,
                    "video.codec": "h264",
                    "video.pix_fmt": "yuv420p",
                    "video.is_depth_map": False,
                    "video.fps": fps,
                    "video.channels": c,
                    "has_audio": False,
                },
            }
        else:
            features[key] = {
                "dtype": f.dtype,
                "shape": list(f.shape),
                "names": list(f.names) if f.names else None,
            }
    return {**features, **OUTCOME_FEATURES, **DEFAULT_FEATURES}


def chunk_and_file(index: int) -> dict[str, int]:
    """Chunk and file numbers of episode ``index`` (one file per episode, 1000 files a chunk:
    file names sort as strings, so a file number never reaches four digits)."""
    return {"chunk_index": index // CHUNKS_SIZE, "file_index": index % CHUNKS_SIZE}


def json_differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Every leaf where two JSON-like values differ, as ``path: a vs b`` (``missing`` for a key
    only one of them has), e.g. ``spec.tasks: ['reach-v3'] vs ['reach-v3', 'push-v3']``."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in dict.fromkeys([*a, *b]):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                out.append(f"{sub}: {'missing' if key not in a else a[key]!r} vs "
                           f"{'missing' if key not in b else b[key]!r}")
            else:
                out.extend(json_differences(a[key], b[key], sub))
        return out
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and an atomic rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
