"""Decode a dataset's videos once, then read frames at random from memory-mapped arrays.

Training reads frames in random order; decoding H.264/AV1 for each sample would cost a seek to the
previous keyframe and several decodes per frame. :class:`VideoCache` decodes each (camera, episode)
once into an uncompressed ``.npy`` file (``uint8 [length, H, W, 3]``) and serves later reads as
memory-map slices, which the OS page cache keeps hot. Disk cost: ``H * W * 3`` bytes a frame
(about 49 KB at 128x128, 1.4 GB for 10 hours of one camera at 10 fps).

Where the cache lives: ``<cache_dir>/<sha256(resolved dataset path)[:16]>/<video key>/`` with
``cache_dir`` defaulting to ``$TETHER_CACHE_DIR``, else ``$XDG_CACHE_HOME/tether/videos``, else
``~/.cache/tether/videos``. It is never inside the dataset folder, so a dataset stays a valid
LeRobotDataset and read-only datasets (a shared drive) can be cached.

When an entry is stale: each entry's file name carries a fingerprint of what it was decoded from
(the mp4's size, mtime and inode, the episode's ``from_timestamp`` and length, the frame shape).
A rewritten video, or an episode moved to other frames of a file, gets a new name and is decoded
again; appending episodes to a dataset keeps the entries of the old ones. (A fingerprint of
``meta/info.json`` would be simpler but throws the whole cache away on every appended episode.)
An entry replaced this way deletes its predecessors when written; :meth:`VideoCache.clear` removes
everything of a dataset.

Concurrency: an entry is written to a unique temporary file and renamed into place, so readers
in other threads or processes (DataLoader workers) see a complete file or none; an advisory lock
(``fcntl.flock``, where available) keeps two of them from decoding the same entry twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np

from tether.robot.dataset.reader import Dataset, DatasetError

try:  # POSIX only; elsewhere concurrent misses just decode twice (the rename keeps it correct)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

MAX_OPEN = 256
"""Memory maps kept open per cache: each holds a file descriptor, and a dataset may have many
thousands of episodes."""


def default_cache_dir() -> Path:
    """``$TETHER_CACHE_DIR``, else ``$XDG_CACHE_HOME/tether/videos``, else ``~/.cache/tether/videos``."""
    if os.environ.get("TETHER_CACHE_DIR"):
        return Path(os.environ["TETHER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tether" / "videos"


def decode_frames(
    path: Path | str, times_s: np.ndarray, shape: tuple[int, int], out: np.ndarray | None = None,
    tolerance_s: float = 1e-4,
) -> np.ndarray:
    """Decode the frames of a video shown at ``times_s``.

    Seeks to the keyframe before the first time and decodes forward to the last one, so an episode
    packed with others in one file (LeRobot's layout) costs its own frames, not the whole file's.

    Args:
        path: an mp4 (any codec the FFmpeg inside PyAV decodes).
        times_s: [K] ascending presentation times (s) in the file, e.g. LeRobot's
            ``from_timestamp + timestamp`` for the rows of an episode.
        shape: (H, W) of the feature: frames are cropped to it, since encoders pad odd sizes.
        out: optional uint8 [K, H, W, 3] array (a memory map) to fill.
        tolerance_s: largest |frame time - requested time| accepted; 1e-4 s as in LeRobot's
            ``LeRobotDataset(tolerance_s=1e-4)``.

    Returns:
        uint8 [K, H, W, 3] RGB frames (``out`` when given).

    Raises:
        DatasetError: a requested time has no frame within ``tolerance_s`` (variable frame rate,
            timestamps that are not on the video's grid, or a truncated file).
    """
    times = np.asarray(times_s, dtype=np.float64)
    h, w = shape
    if out is None:
        out = np.empty((len(times), h, w, 3), np.uint8)
    filled = np.zeros(len(times), bool)
    if len(times) == 0:
        return out
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        time_base = stream.time_base or Fraction(1, 1)
        # seek() goes to the keyframe at or before this pts
        container.seek(int(np.floor(times[0] / time_base)), stream=stream, backward=True)
        last = times[-1] + tolerance_s
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * time_base)
            if t > last:
                break
            k = int(np.searchsorted(times, t))
            for j in (k - 1, k):  # the nearest requested time, on either side of t
                if 0 <= j < len(times) and not filled[j] and abs(times[j] - t) <= tolerance_s:
                    out[j] = frame.to_ndarray(format="rgb24")[:h, :w]
                    filled[j] = True
                    break
    if not filled.all():
        missing = times[~filled]
        raise DatasetError(
            f"{path}: no frame within {tolerance_s} s of {len(missing)} requested time(s), first "
            f"{missing[0]:.6f} s (is the video constant frame rate with the parquet timestamps?)"
        )
    return out


class VideoCache:
    """Decoded camera frames of a dataset, one memory-mapped ``.npy`` per (video key, episode).

    Args:
        dataset: a :class:`~tether.robot.dataset.Dataset` or its folder.
        cache_dir: where caches of all datasets live (see the module docstring for the default).
        tolerance_s: see :func:`decode_frames`.

    Attributes:
        dataset: the dataset; root: this dataset's cache folder.

    Pickles without its open memory maps, so it can be handed to DataLoader worker processes.
    """

    def __init__(
        self, dataset: Dataset | Path | str, cache_dir: Path | str | None = None,
        tolerance_s: float = 1e-4,
    ):
        self.dataset = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
        base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        source = str(self.dataset.root.resolve())
        self.root = base / hashlib.sha256(source.encode()).hexdigest()[:16]
        self.tolerance_s = tolerance_s
        self._open: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.root.mkdir(parents=True, exist_ok=True)
        readme = self.root / "dataset.json"
        if not readme.exists():  # for people wondering what a cache folder belongs to
            readme.write_text(json.dumps({"dataset": source}))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _video_file(self, key: str, episode: int) -> Path:
        ep = self.dataset.episodes[episode]
        return self.dataset.root / self.dataset.info["video_path"].format(
            video_key=key,
            chunk_index=ep[f"videos/{key}/chunk_index"],
            file_index=ep[f"videos/{key}/file_index"],
        )

    def _shape(self, key: str) -> tuple[int, int]:
        feature = self.dataset.features[key]
        shape = list(feature["shape"])
        names = feature.get("names") or []
        if list(names)[:1] in (["channel"], ["channels"]):  # LeRobot v2.0-style [C, H, W]
            return int(shape[1]), int(shape[2])
        return int(shape[0]), int(shape[1])

    def path(self, key: str, episode: int) -> Path:
        """The cache file of camera ``key`` in episode ``episode`` (position in ``dataset.episodes``).

        Raises:
            KeyError: ``key`` is not a video feature.
            FileNotFoundError: the episode's video file is missing.
        """
        if key not in self.dataset.video_keys:
            raise KeyError(f"{key!r} is not a video feature; videos: {self.dataset.video_keys}")
        ep = self.dataset.episodes[episode]
        stat = self._video_file(key, episode).stat()
        source = [
            stat.st_size, stat.st_mtime_ns, stat.st_ino,
            float(ep[f"videos/{key}/from_timestamp"]), int(ep["length"]), self._shape(key),
        ]
        digest = hashlib.sha256(json.dumps(source).encode()).hexdigest()[:16]
        return self.root / key / f"episode_{int(ep['episode_index']):06d}_{digest}.npy"

    def _build(self, key: str, episode: int, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock_file = open(target.with_suffix(".lock"), "w") if fcntl is not None else None
        try:
            if lock_file is not None:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
            if target.exists():  # another process decoded it while we waited for the lock
                return
            ep = self.dataset.episodes[episode]
            # LeRobot decodes row k at from_timestamp + timestamp[k] (lerobot_dataset._query_videos)
            timestamps = self.dataset.episode(episode, ["timestamp"])["timestamp"].astype(np.float64)
            times = float(ep[f"videos/{key}/from_timestamp"]) + timestamps
            h, w = self._shape(key)
            tmp = target.with_name(f"{target.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp.npy")
            try:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(times), h, w, 3))
                decode_frames(self._video_file(key, episode), times, (h, w), out, self.tolerance_s)
                out.flush()
                del out
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            prefix = target.name.rsplit("_", 1)[0] + "_"
            for old in target.parent.glob(prefix + "*.npy"):  # earlier versions of this entry
                if old != target and ".tmp" not in old.name:
                    old.unlink(missing_ok=True)
        finally:
            if lock_file is not None:
                lock_file.close()

    def array(self, key: str, episode: int) -> np.ndarray:
        """All frames of camera ``key`` in episode ``episode``: read-only uint8 memory map
        [length, H, W, 3], decoded on first use.

        Raises:
            KeyError, FileNotFoundError: see :meth:`path`; DatasetError: see :func:`decode_frames`.
        """
        with self._lock:
            cached = self._open.get((key, episode))
            if cached is not None:
                self._open.move_to_end((key, episode))
                return cached
        target = self.path(key, episode)
        if not target.exists():
            self._build(key, episode, target)
        array = np.load(target, mmap_mode="r")
        with self._lock:
            self._open[(key, episode)] = array
            while len(self._open) > MAX_OPEN:
                self._open.popitem(last=False)
        return array

    def frames(self, key: str, episode: int, indices: np.ndarray | Iterable[int]) -> np.ndarray:
        """Frames ``indices`` (positions within the episode, any order, repeats allowed) of camera
        ``key`` in episode ``episode``: uint8 [K, H, W, 3], a copy.

        Raises:
            IndexError: an index outside [0, length). Others: see :meth:`array`.
        """
        return self.array(key, episode)[np.asarray(indices, dtype=np.int64)]

    def warm(self, keys: Iterable[str] | None = None, episodes: Iterable[int] | None = None) -> None:
        """Decode every (key, episode) not cached yet, e.g. once before starting DataLoader workers."""
        for key in keys if keys is not None else self.dataset.video_keys:
            for episode in episodes if episodes is not None else range(len(self.dataset)):
                target = self.path(key, episode)
                if not target.exists():
                    self._build(key, episode, target)

    def clear(self) -> None:
        """Delete this dataset's cache folder."""
        import shutil

        with self._lock:
            self._open.clear()
        shutil.rmtree(self.root, ignore_errors=True)
