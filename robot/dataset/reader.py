"""Reader of LeRobotDataset v3.0 folders, written by tether or by LeRobot.

Only episodes listed in ``meta/episodes`` and counted by ``meta/info.json`` (written last by the
writer, so it is the commit point) are read: files left by a crashed recording are never seen.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tether.robot.dataset import format as fmt
from tether.robot.spec import RobotSpec, SpecError
from tether.robot.video import read_mp4


class DatasetError(ValueError):
    """The folder is not a readable LeRobotDataset v3.0."""


def _column_to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    array = column.combine_chunks()
    if pa.types.is_fixed_size_list(array.type) or pa.types.is_list(array.type):
        width = len(array[0]) if len(array) else 0
        return array.flatten().to_numpy(zero_copy_only=False).reshape(len(array), width)
    return array.to_numpy(zero_copy_only=False)


class Dataset:
    """A dataset folder.

    Attributes:
        root, info (``meta/info.json``), fps, features, tasks (by task_index), episodes (rows of
        ``meta/episodes``), spec (tether's robot spec, or None for datasets from elsewhere).

    Raises:
        DatasetError: missing, unreadable or invalid ``meta/info.json`` (fps, features, counts,
            another codebase version), a missing or unreadable ``meta/tasks.parquet`` or episode
            table, or an episode table listing fewer episodes than ``info.json`` commits; each
            message says which file and what it is needed for.
    """

    def __init__(self, root: Path | str):
        from tether.robot.dataset.check import ROLES, read_info

        self.root = Path(root)
        self.info = read_info(self.root)  # DatasetError naming the field and why it is needed
        self.fps = float(self.info["fps"])
        self.features: dict = self.info["features"]
        spec = self.info.get("tether", {}).get("spec")
        try:
            self.spec = RobotSpec.from_dict(spec) if spec else None
        except (SpecError, ValueError, TypeError, KeyError) as e:
            raise DatasetError(f"{self.root}: {fmt.INFO_PATH}: tether.spec is not a robot spec ({e})") from None
        self.tasks = self._read_tasks(ROLES[fmt.TASKS_PATH])
        episodes_dir = self.root / "meta" / "episodes"
        files = sorted(episodes_dir.rglob("*.parquet")) if episodes_dir.exists() else []
        rows: list[dict] = []
        for f in files:
            try:
                rows.extend(pq.read_table(f).to_pylist())
            except (pa.ArrowException, OSError) as e:
                raise DatasetError(f"{self.root}: {f.relative_to(self.root)} cannot be read ({e}); it is "
                                   f"part of {ROLES['meta/episodes']}") from None
        if any("episode_index" not in r or "length" not in r for r in rows):
            raise DatasetError(f"{self.root}: meta/episodes has rows without episode_index or length")
        # info.json is written last: an episode it does not count yet was not committed.
        committed = int(self.info.get("total_episodes", len(rows)))
        if len(rows) < committed:
            missing = f"{fmt.EPISODES_PATH} is missing" if not files else f"meta/episodes lists {len(rows)}"
            raise DatasetError(
                f"{self.root}: {missing} but {fmt.INFO_PATH} counts {committed} episodes: it is "
                f"{ROLES['meta/episodes']}; restore it from a copy (tether dataset check {self.root} "
                "lists every problem)")
        self.episodes = sorted(rows, key=lambda r: r["episode_index"])[:committed]
        self.video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]

    def _read_tasks(self, role: str) -> list[str]:
        path = self.root / fmt.TASKS_PATH
        if not path.exists():
            raise DatasetError(f"{self.root}: {fmt.TASKS_PATH} is missing: it holds {role}")
        try:
            tasks = pq.read_table(path)
        except (pa.ArrowException, OSError) as e:
            raise DatasetError(f"{self.root}: {fmt.TASKS_PATH} cannot be read ({e}): it holds {role}") from None
        name = "task" if "task" in tasks.column_names else "__index_level_0__"
        if "task_index" not in tasks.column_names or name not in tasks.column_names:
            raise DatasetError(f"{self.root}: {fmt.TASKS_PATH} has columns {tasks.column_names}, not "
                               "task_index and task")
        order = np.argsort(tasks.column("task_index").to_numpy())
        names = tasks.column(name).to_pylist()
        return [names[i] for i in order]

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        return sum(e["length"] for e in self.episodes)

    def _data_file(self, ep: dict) -> Path:
        return self.root / self.info["data_path"].format(
            chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"]
        )

    def episode(self, index: int, columns: list[str] | None = None) -> dict[str, np.ndarray]:
        """The frames of one episode: column -> array [length, ...].

        Raises:
            DatasetError: its data file is missing or unreadable, lacks a column, or holds
                another number of rows than the episode's length.
        """
        from tether.robot.dataset.check import data_role

        ep = self.episodes[index]
        path = self._data_file(ep)
        rel = path.relative_to(self.root)
        if not path.exists():
            raise DatasetError(f"{self.root}: {rel} is missing: {data_role([ep['episode_index']])}")
        # A data file may hold several episodes (LeRobot packs them up to ~100 MB, one row group
        # each): the filter selects this one's rows even when ``columns`` leaves out
        # episode_index, and row-group statistics let pyarrow skip the other episodes.
        try:
            table = pq.read_table(path, columns=columns, filters=[("episode_index", "=", ep["episode_index"])])
        except (pa.ArrowException, OSError, KeyError) as e:
            raise DatasetError(f"{self.root}: {rel} cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__}; "
                               f"cut short or overwritten?): {data_role([ep['episode_index']])}") from None
        if table.num_rows != ep["length"]:
            raise DatasetError(f"{self.root}: {rel} holds {table.num_rows} rows of episode "
                               f"{ep['episode_index']}, whose length is {ep['length']}")
        return {name: _column_to_numpy(table.column(name)) for name in table.column_names}

    def frames(self, columns: list[str]) -> dict[str, np.ndarray]:
        """Columns of every episode, concatenated in episode order: column -> [total, ...]."""
        cols = list(dict.fromkeys([*columns, "episode_index"]))
        parts = [self.episode(i, cols) for i in range(len(self))]
        return {c: np.concatenate([p[c] for p in parts]) for c in columns}

    def video_path(self, key: str, index: int) -> Path:
        """The MP4 file holding camera ``key``'s frames of episode ``index`` (maybe with others)."""
        ep = self.episodes[index]
        return self.root / self.info["video_path"].format(
            video_key=key,
            chunk_index=ep[f"videos/{key}/chunk_index"],
            file_index=ep[f"videos/{key}/file_index"],
        )

    def video(self, key: str, index: int) -> np.ndarray:
        """The frames of camera ``key`` in episode ``index``: uint8 [length, H, W, 3].

        Raises:
            DatasetError: the video is missing, cannot be decoded, or holds too few frames.
        """
        from tether.robot.dataset.check import video_role

        ep = self.episodes[index]
        path = self.video_path(key, index)
        rel, role = path.relative_to(self.root), video_role(key, [ep["episode_index"]])
        if not path.exists():
            raise DatasetError(f"{self.root}: {rel} is missing: {role}")
        try:
            frames = read_mp4(path)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise DatasetError(f"{self.root}: {rel} cannot be decoded ({e}; cut short or "
                               f"overwritten?): {role}") from None
        first = int(round(ep[f"videos/{key}/from_timestamp"] * self.fps))
        if len(frames) < first + ep["length"]:
            raise DatasetError(f"{self.root}: {rel} holds {len(frames)} frames, episode "
                               f"{ep['episode_index']} needs {first + ep['length']}")
        return frames[first : first + ep["length"]]

    def episode_stats(self, index: int) -> dict[str, dict[str, np.ndarray]]:
        """The ``stats/<feature>/<stat>`` columns of one episode as arrays."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for key, value in self.episodes[index].items():
            if key.startswith("stats/"):
                feature, stat = key[len("stats/") :].rsplit("/", 1)
                out.setdefault(feature, {})[stat] = np.asarray(value)
        return out
