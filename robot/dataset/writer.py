"""Crash-safe writer of LeRobotDataset v3.0 folders (layout in ``format.py``).

Each ``add_episode`` writes the episode's data parquet and videos under temporary names, renames
them into place, and only then rewrites the metadata (episodes, tasks, stats, info), each file
atomically. A process killed at any moment therefore loses at most the episode being written:
everything listed in ``meta/`` is complete on disk. Reopening with ``resume=True`` removes files
of an episode that never reached the metadata and continues the numbering.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tether.robot.dataset import format as fmt
from tether.robot.dataset.stats import ImageSample, aggregate, feature_stats, to_jsonable
from tether.robot.spec import RobotSpec
from tether.robot.video import VideoEncoder

log = logging.getLogger(__name__)


def _episode_of(rel: Path, video_keys: list[str]) -> int | None:
    """The episode number of a data or video file path (relative to the root) in tether's layout
    (one file per episode, ``fmt.chunk_and_file``; a ``.tmp`` suffix allowed), else None."""
    name = rel.as_posix().removesuffix(".tmp")
    match = re.fullmatch(r"(?:data|videos/([^/]+))/chunk-(\d+)/file-(\d+)\.(?:parquet|mp4)", name)
    if match is None or (match[1] is not None and match[1] not in video_keys):
        return None
    index = int(match[2]) * fmt.CHUNKS_SIZE + int(match[3])
    where = fmt.chunk_and_file(index)
    expected = (fmt.DATA_PATH.format(**where) if match[1] is None
                else fmt.VIDEO_PATH.format(video_key=match[1], **where))
    return index if name == expected else None


class DatasetExistsError(FileExistsError):
    """The folder already holds a dataset and neither resume nor overwrite was asked for."""


def _arrow_column(values: np.ndarray) -> pa.Array:
    """[N] -> a plain column; [N, D] -> fixed-size lists of D (HF datasets' Sequence(length=D))."""
    if values.ndim == 1:
        return pa.array(values)
    flat = pa.array(values.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to a temporary file and rename it to ``path``: complete or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def tasks_table(tasks: list[str]) -> pa.Table:
    """``meta/tasks.parquet``: the task strings as the (pandas) index, and their ``task_index``."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": tasks})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": None},
        ],
        "pandas_version": "2.2.0",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


class DatasetWriter:
    """Write episodes recorded from a robot with ``spec`` into ``root``.

    Args:
        root: the dataset folder.
        spec: the robot spec; its observations and action become the dataset's features.
        fps: frames per second (the robot's control rate when every tick is recorded).
        resume: continue an existing dataset at ``root`` (its spec and fps must match).
        overwrite: replace an existing dataset at ``root``.

    Raises:
        DatasetExistsError: ``root`` holds a dataset and neither ``resume`` nor ``overwrite``.
        DatasetError (a ValueError): resuming a dataset recorded with another spec or fps
            (the message lists the differences), or one that ``tether dataset check`` finds
            damaged (nothing is deleted then: see ``_remove_orphans``).
    """

    def __init__(
        self,
        root: Path | str,
        spec: RobotSpec,
        fps: float,
        resume: bool = False,
        overwrite: bool = False,
    ):
        self.root = Path(root)
        self.spec = spec
        self.fps = float(fps)
        self.features = fmt.features_from_spec(spec, self.fps)
        self.video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        self.episodes: list[dict] = []
        self.tasks: list[str] = []
        self._episode_stats: list[dict[str, dict[str, np.ndarray]]] = []
        self._spec_features = {**spec.observation, "action": spec.action}
        self._open: EpisodeWriter | None = None
        info_path = self.root / fmt.INFO_PATH
        if info_path.exists():
            if overwrite:
                import shutil

                shutil.rmtree(self.root)
            elif resume:
                self._load_existing()
            else:
                raise DatasetExistsError(
                    f"{self.root} already holds a dataset: pass resume to continue it or "
                    "overwrite to replace it"
                )
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.episodes:
            self._write_meta()

    @property
    def total_frames(self) -> int:
        return sum(e["length"] for e in self.episodes)

    def _load_existing(self) -> None:
        """Open the dataset at ``root`` to append to it, after checking it (``check.require_intact``,
        quick): a damaged dataset is refused before anything is touched."""
        from tether.robot.dataset.check import require_intact
        from tether.robot.dataset.reader import Dataset, DatasetError

        require_intact(self.root, doing="resume")
        ds = Dataset(self.root)
        if ds.spec is not None and ds.spec.to_dict() != self.spec.to_dict():
            differences = fmt.json_differences(ds.spec.to_dict(), self.spec.to_dict(), "spec")
            shown = "; ".join(d[:160] for d in differences[:3]) + ("; ..." if len(differences) > 3 else "")
            raise DatasetError(
                f"{self.root} was recorded with another robot spec (recorded vs now: {shown}): resume "
                "it with the settings it was recorded with, or record into a new dataset and merge "
                "the two (tether dataset merge)")
        if abs(ds.fps - self.fps) > 1e-9:
            raise DatasetError(f"{self.root} was recorded at {ds.fps:g} fps, not {self.fps:g}: resume "
                               "it at the rate it was recorded at, or record into a new dataset")
        self.episodes = ds.episodes
        self.tasks = list(ds.tasks)
        self._episode_stats = [ds.episode_stats(i) for i in range(len(self.episodes))]
        self._remove_orphans()

    def _remove_orphans(self) -> None:
        """Delete what a previous run died writing, and nothing else: temporary files (never read:
        a file is renamed into place whole), and data and video files of episode numbers past the
        committed ones (``info.json``, written last, does not count them, so they never finished).
        Any other file no episode lists is left where it is, with a warning."""
        committed = len(self.episodes)
        listed = {self.root / self._data_path(i) for i in range(committed)}
        listed |= {self.root / self._video_path(k, i) for k in self.video_keys for i in range(committed)}
        for sub in ("data", "videos"):
            for path in sorted((self.root / sub).rglob("*")) if (self.root / sub).exists() else []:
                if not path.is_file() or path in listed:
                    continue
                index = _episode_of(path.relative_to(self.root), self.video_keys)
                if path.name.endswith(".tmp") or (index is not None and index >= committed):
                    log.warning("removing %s: its episode was never completed", path)
                    path.unlink()
                else:
                    log.warning("leaving %s alone: no episode lists it, and it is not an unfinished "
                                "episode's file", path)
        for path in (self.root / "meta").rglob("*.tmp"):  # a metadata write that never finished
            path.unlink()

    @staticmethod
    def _data_path(index: int) -> str:
        return fmt.DATA_PATH.format(**fmt.chunk_and_file(index))

    @staticmethod
    def _video_path(key: str, index: int) -> str:
        return fmt.VIDEO_PATH.format(video_key=key, **fmt.chunk_and_file(index))

    def begin_episode(self, task: str) -> EpisodeWriter:
        """Start the next episode; add frames to it one at a time and ``save()`` or ``discard()`` it.

        Raises:
            RuntimeError: another episode of this writer is still open.
        """
        if self._open is not None:
            raise RuntimeError("an episode is still open: save() or discard() it first")
        self._open = EpisodeWriter(self, len(self.episodes), task)
        return self._open

    def add_episode(self, frames: dict[str, np.ndarray], task: str) -> int:
        """Write one whole episode and return its index.

        Args:
            frames: feature key -> array [N, ...] for every feature of the spec (observations and
                ``action``) and optionally ``next.reward``/``next.success``/``next.done`` [N].
            task: the task string of the episode.

        Raises:
            ValueError: a feature is missing, has the wrong shape, or columns differ in length.
        """
        n = len(frames["action"]) if "action" in frames else 0
        if n == 0:
            raise ValueError("an episode needs at least one frame with an 'action'")
        for key, feature in self._spec_features.items():
            if key not in frames:
                raise ValueError(f"episode is missing feature {key!r}")
            if np.shape(frames[key]) != (n, *feature.shape):
                raise ValueError(f"{key}: shape {np.shape(frames[key])}, expected {(n, *feature.shape)}")
        episode = self.begin_episode(task)
        try:
            for i in range(n):
                episode.add_frame({k: v[i] for k, v in frames.items()})
        except BaseException:
            episode.discard()
            raise
        return episode.save()

    def _commit(self, episode: EpisodeWriter, columns: dict[str, np.ndarray],
                stats: dict[str, dict[str, np.ndarray]]) -> int:
        """Write an episode's data file and metadata (its videos are already in place)."""
        index, n, task = episode.index, len(episode), episode.task
        if task not in self.tasks:
            self.tasks.append(task)
        start = self.total_frames
        defaults = {
            "timestamp": (np.arange(n) / self.fps).astype(np.float32),
            "frame_index": np.arange(n, dtype=np.int64),
            "episode_index": np.full(n, index, dtype=np.int64),
            "index": np.arange(start, start + n, dtype=np.int64),
            "task_index": np.full(n, self.tasks.index(task), dtype=np.int64),
        }
        for key, values in defaults.items():
            columns[key] = values
            stats[key] = feature_stats(values)
        table = pa.table({k: _arrow_column(v) for k, v in columns.items()})
        write_parquet_atomic(table, self.root / self._data_path(index))
        where = fmt.chunk_and_file(index)
        row = {
            "episode_index": index,
            "tasks": [task],
            "length": n,
            "data/chunk_index": where["chunk_index"],
            "data/file_index": where["file_index"],
            "dataset_from_index": start,
            "dataset_to_index": start + n,
        }
        for key in self.video_keys:
            row[f"videos/{key}/chunk_index"] = where["chunk_index"]
            row[f"videos/{key}/file_index"] = where["file_index"]
            row[f"videos/{key}/from_timestamp"] = 0.0
            row[f"videos/{key}/to_timestamp"] = n / self.fps
        row["meta/episodes/chunk_index"] = 0
        row["meta/episodes/file_index"] = 0
        for key in self.features:  # in feature order, as LeRobot lists them
            for name, value in stats[key].items():
                row[f"stats/{key}/{name}"] = value.tolist()
        self.episodes.append(row)
        self._episode_stats.append(stats)
        self._write_meta()
        return index

    def _write_meta(self) -> None:
        meta = self.root / "meta"
        (meta / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
        if self.episodes:
            write_parquet_atomic(pa.Table.from_pylist(self.episodes), self.root / fmt.EPISODES_PATH)
            keys = self._episode_stats[0].keys()
            dataset_stats = {k: aggregate([s[k] for s in self._episode_stats]) for k in keys}
            fmt.write_json_atomic(self.root / fmt.STATS_PATH, to_jsonable(dataset_stats))
        write_parquet_atomic(tasks_table(self.tasks), self.root / fmt.TASKS_PATH)
        info = {
            "codebase_version": fmt.CODEBASE_VERSION,
            "robot_type": self.spec.robot_type,
            "total_episodes": len(self.episodes),
            "total_frames": self.total_frames,
            "total_tasks": len(self.tasks),
            "chunks_size": fmt.CHUNKS_SIZE,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200,
            "fps": int(self.fps) if float(self.fps).is_integer() else self.fps,
            "splits": {"train": f"0:{len(self.episodes)}"},
            "data_path": fmt.DATA_PATH,
            "video_path": fmt.VIDEO_PATH if self.video_keys else None,
            "features": self.features,
            "tether": {"spec": self.spec.to_dict()},
        }
        # info.json last: it is what readers open first, and it only counts finished episodes.
        fmt.write_json_atomic(self.root / fmt.INFO_PATH, info)


class _VideoStream:
    """One camera's encoder in its own thread, fed through a bounded queue: the recording loop
    never waits on x264 unless the encoder falls ``capacity`` frames behind, and then it blocks
    rather than dropping a frame."""

    def __init__(self, path: Path, fps: float, capacity: int):
        self.encoder = VideoEncoder(path, fps)
        self.sample = ImageSample()
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name=f"encode-{path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (image := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self.encoder.add(image)
                except BaseException as e:  # noqa: BLE001 - re-raised in the recording thread
                    self.error = e

    def put(self, image: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        self.sample.add(image)
        self._queue.put(image)

    def finish(self) -> dict[str, np.ndarray]:
        """Wait for the encoder, move the file into place; the frames' statistics."""
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            self.encoder.abort()
            raise self.error
        self.encoder.close()
        return self.sample.stats()

    def abort(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self.encoder.abort()


class EpisodeWriter:
    """One episode being recorded: frames are added as they arrive, videos are encoded meanwhile.

    Made by ``DatasetWriter.begin_episode``. Nothing becomes part of the dataset before ``save()``;
    ``discard()`` (or a crash) leaves only temporary files, which ``resume`` removes.

    Attributes:
        index: the episode index it will get; task: its task string.
    """

    VIDEO_QUEUE_S = 2.0  # seconds of frames an encoder may fall behind before add_frame blocks

    def __init__(self, writer: DatasetWriter, index: int, task: str):
        self.writer, self.index, self.task = writer, index, task
        self._columns: dict[str, list] = {k: [] for k, f in writer.features.items()
                                          if f["dtype"] != "video" and k not in fmt.DEFAULT_FEATURES}
        capacity = max(4, int(self.VIDEO_QUEUE_S * writer.fps))
        self._videos = {k: _VideoStream(writer.root / writer._video_path(k, index), writer.fps, capacity)
                        for k in writer.video_keys}
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def add_frame(self, frame: dict) -> None:
        """Append one frame: every feature of the spec (``observation.*`` and ``action``, images
        uint8 [H, W, 3]) and optionally ``next.reward``, ``next.success``, ``next.done`` (scalars;
        default 0, False, and True on the last frame).

        Raises:
            ValueError: a feature is missing or has the wrong shape.
        """
        for key, feature in self.writer._spec_features.items():
            if key not in frame:
                raise ValueError(f"frame {self._n} is missing feature {key!r}")
            if np.shape(frame[key]) != feature.shape:
                raise ValueError(f"{key}: frame {self._n} has shape {np.shape(frame[key])}, "
                                 f"expected {feature.shape}")
        for key, stream in self._videos.items():
            stream.put(frame[key])
        for key, values in self._columns.items():
            if key in frame:
                values.append(frame[key])
            elif key in fmt.OUTCOME_FEATURES:
                values.append(None)
        self._n += 1

    def save(self) -> int:
        """Finish the videos, write the data file and the metadata; returns the episode index.

        Raises:
            ValueError: the episode has no frame.
        """
        if self._n == 0:
            self.discard()
            raise ValueError("an episode needs at least one frame")
        try:
            stats = {k: stream.finish() for k, stream in self._videos.items()}
        except BaseException:
            self.discard()
            raise
        n = self._n
        # Every declared column must exist (LeRobot loads a missing one as None): a robot without
        # a reward source records reward 0 and no success; the last frame ends the episode.
        fill = {"next.reward": 0.0, "next.success": False}
        columns: dict[str, np.ndarray] = {}
        for key, values in self._columns.items():
            if key == "next.done":
                values = [i == n - 1 if v is None else v for i, v in enumerate(values)]
            elif key in fill:
                values = [fill[key] if v is None else v for v in values]
            array = np.asarray(values).astype(self.writer.features[key]["dtype"])
            columns[key] = array
            stats[key] = feature_stats(array)
        self.writer._open = None
        return self.writer._commit(self, columns, stats)

    def discard(self) -> None:
        """Drop the episode: nothing of it stays on disk."""
        for stream in self._videos.values():
            stream.abort()
        self._videos = {}
        if self.writer._open is self:
            self.writer._open = None
