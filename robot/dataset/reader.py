"""Reader of LeRobotDataset v3.0 folders, written by tether or by LeRobot.

Only episodes listed in ``meta/episodes`` and counted by ``meta/info.json`` (written last by the
writer, so it is the commit point) are read: files left by a crashed recording are never seen.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tether.robot.dataset import format as fmt
from tether.robot.spec import RobotSpec
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
        DatasetError: missing ``meta/info.json``, another codebase version, or missing files.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        info_path = self.root / fmt.INFO_PATH
        if not info_path.exists():
            raise DatasetError(f"{self.root} is not a dataset: {fmt.INFO_PATH} is missing")
        self.info = json.loads(info_path.read_text())
        version = self.info.get("codebase_version")
        if version != fmt.CODEBASE_VERSION:
            raise DatasetError(
                f"{self.root} is a LeRobotDataset {version}; tether reads {fmt.CODEBASE_VERSION}"
            )
        self.fps = float(self.info["fps"])
        self.features: dict = self.info["features"]
        spec = self.info.get("tether", {}).get("spec")
        self.spec = RobotSpec.from_dict(spec) if spec else None
        tasks = pq.read_table(self.root / fmt.TASKS_PATH)
        order = np.argsort(tasks.column("task_index").to_numpy())
        names = tasks.column("task").to_pylist() if "task" in tasks.column_names else tasks.column(
            "__index_level_0__"
        ).to_pylist()
        self.tasks = [names[i] for i in order]
        episodes_dir = self.root / "meta" / "episodes"
        files = sorted(episodes_dir.rglob("*.parquet")) if episodes_dir.exists() else []
        rows: list[dict] = []
        for f in files:
            rows.extend(pq.read_table(f).to_pylist())
        # info.json is written last: an episode it does not count yet was not committed.
        committed = int(self.info.get("total_episodes", len(rows)))
        self.episodes = sorted(rows, key=lambda r: r["episode_index"])[:committed]
        self.video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]

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
        """The frames of one episode: column -> array [length, ...]."""
        ep = self.episodes[index]
        # A data file may hold several episodes (LeRobot packs them up to ~100 MB, one row group
        # each): the filter selects this one's rows even when ``columns`` leaves out
        # episode_index, and row-group statistics let pyarrow skip the other episodes.
        table = pq.read_table(
            self._data_file(ep), columns=columns, filters=[("episode_index", "=", ep["episode_index"])]
        )
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
        """The frames of camera ``key`` in episode ``index``: uint8 [length, H, W, 3]."""
        ep = self.episodes[index]
        frames = read_mp4(self.video_path(key, index))
        first = int(round(ep[f"videos/{key}/from_timestamp"] * self.fps))
        return frames[first : first + ep["length"]]

    def episode_stats(self, index: int) -> dict[str, dict[str, np.ndarray]]:
        """The ``stats/<feature>/<stat>`` columns of one episode as arrays."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for key, value in self.episodes[index].items():
            if key.startswith("stats/"):
                feature, stat = key[len("stats/") :].rsplit("/", 1)
                out.setdefault(feature, {})[stat] = np.asarray(value)
        return out
