"""Verify every file of a LeRobotDataset v3.0 folder: ``tether dataset check``.

What is checked, in order (a later step needs what an earlier one read; a problem that leaves
nothing to go on ends the check there):

1. ``meta/info.json``: valid JSON, codebase version v3.0, ``fps`` a positive number, ``features``
   (each with a dtype and a shape), the counts and path templates, tether's robot spec if any;
2. ``meta/tasks.parquet``: readable, a task string per ``task_index``;
3. ``meta/episodes``: readable; episodes 0..N-1 listed for the N that info.json counts (rows past
   N are an episode that was being written when a recording stopped: noted, not a problem), each
   with its length, task, data file, row range and video location; the lengths add up to
   ``total_frames`` and the row ranges follow each other;
4. data files: present and readable parquet, every declared non-video column there, each
   episode's rows where the episode table says (``--quick``: the row count from the footer only;
   full: every column read, ``episode_index``/``frame_index``/``index`` as listed);
5. videos: present, a video stream of the feature's size (padded to even), enough frames for
   every episode it holds (``--quick``: packets counted without decoding; full: every frame
   decoded);
6. ``meta/stats.json``: valid JSON; statistics of the action and every observation (what
   training normalizes with), and of any other feature they cover: of the feature's size,
   finite, and (vector features) counting the dataset's frames.

Files under ``data/`` and ``videos/`` that no committed episode lists are noted (an interrupted
recording leaves them; ``tether collect --resume`` removes those past the committed episodes).
Nothing is ever written: a check is safe on a dataset being recorded to, and on a broken one.

A video corrupted in a way FFmpeg conceals (it decodes damaged frames rather than failing) is not
detected: the format stores no checksums.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.robot.dataset import format as fmt

# What each metadata file is for: a missing or broken file's message says why it is needed.
ROLES = {
    fmt.INFO_PATH: "the dataset's table of contents and commit point (fps, features, episode and "
                   "frame counts, file layout): no episode can be read without it",
    fmt.TASKS_PATH: "the task strings that each episode's task_index refers to",
    "meta/episodes": "the episode table (each episode's length, task, data file rows and video "
                     "frames): without it no episode can be located, and --resume could not tell "
                     "recorded episodes from unfinished ones",
    fmt.STATS_PATH: "the feature statistics that training normalizes observations and actions "
                    "with (tether dataset stats DATASET --recompute rewrites it from the data)",
}
STAT_KEYS = ("min", "max", "mean", "std", "count")


class InfoError(ValueError):
    """``meta/info.json`` cannot be used (the message says which field and why)."""


@dataclass
class CheckReport:
    """What ``check_dataset`` found.

    Attributes:
        root: the dataset folder.
        problems: one line each, ``<file relative to root> <what is wrong and why it matters>``,
            e.g. ``meta/stats.json is missing: it holds ...``.
        notes: not problems: files of unfinished episodes, episodes listed but not committed.
        episodes, frames: committed episodes and their frames per info.json (0 when unreadable).
        files: files checked.
        decoded: whether videos were decoded frame by frame (a full check) or only demuxed.
    """

    root: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    episodes: int = 0
    frames: int = 0
    files: int = 0
    decoded: bool = True

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems

    def summary(self) -> str:
        """One line: ``ROOT: ok (...)`` or ``ROOT: N problems (...)``."""
        what = (f"{self.episodes} episodes, {self.frames} frames, {self.files} files checked"
                f"{'' if self.decoded else ', videos not decoded (--quick)'}")
        if self.ok:
            return f"{self.root}: ok ({what})"
        n = len(self.problems)
        return f"{self.root}: {n} problem{'s' * (n != 1)} ({what})"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def validate_info(info: Any) -> dict:
    """Check the fields of a parsed ``meta/info.json`` that tether reads; returns ``info``.

    Raises:
        InfoError: the first field that is missing or of the wrong kind (codebase version,
            ``fps`` a positive number, ``features`` a map of {dtype, shape}, ``total_episodes``
            / ``total_frames`` counts, ``data_path``, ``video_path`` with video features).
    """
    if not isinstance(info, dict):
        raise InfoError(f"holds a JSON {type(info).__name__}, not an object of dataset fields")
    version = info.get("codebase_version")
    if version != fmt.CODEBASE_VERSION:
        raise InfoError(f"codebase_version is {version!r}: a LeRobotDataset {version}; tether reads "
                        f"{fmt.CODEBASE_VERSION}")
    fps = info.get("fps")
    if not _number(fps) or fps <= 0:
        raise InfoError(f"fps is {fps!r}, not a positive number of frames per second: timestamps, "
                        "video times and goal windows are computed from it")
    features = info.get("features")
    if not isinstance(features, dict) or not features:
        raise InfoError(f"features is {'missing' if features is None else repr(features)[:60]}: it "
                        "declares every column (dtype and shape) and the camera videos")
    for key, feature in features.items():
        if not isinstance(feature, dict) or not isinstance(feature.get("dtype"), str):
            raise InfoError(f"feature {key!r} has no dtype")
        shape = feature.get("shape")
        if not isinstance(shape, list) or not all(_count(d) for d in shape):
            raise InfoError(f"feature {key!r} has shape {shape!r}, not a list of sizes")
        if feature["dtype"] == "video" and len(shape) != 3:
            raise InfoError(f"video feature {key!r} has shape {shape}, not [height, width, channels]")
    for name in ("total_episodes", "total_frames"):
        if name in info and not _count(info[name]):
            raise InfoError(f"{name} is {info[name]!r}, not a count")
    if not isinstance(info.get("data_path"), str) or "{" not in info["data_path"]:
        raise InfoError(f"data_path is {info.get('data_path')!r}: it names every data file")
    if any(f["dtype"] == "video" for f in features.values()) and not isinstance(info.get("video_path"), str):
        raise InfoError(f"video_path is {info.get('video_path')!r} but features declare videos")
    tether = info.get("tether", {})
    if not isinstance(tether, dict):
        raise InfoError(f"tether is {tether!r}, not an object holding the robot spec")
    return info


def _load_info(root: Path) -> tuple[dict | None, str]:
    """(info, "") or (None, what is wrong with ``meta/info.json``: a phrase that follows its name)."""
    path = root / fmt.INFO_PATH
    role = f"it is {ROLES[fmt.INFO_PATH]}"
    if not path.exists():
        return None, f"is missing: {role} (restore it from a copy)"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        return None, f"cannot be read ({_error(e)}): {role}"
    if not text.strip():
        return None, f"is empty: {role} (restore it from a copy)"
    try:
        info = json.loads(text)
    except ValueError as e:
        return None, f"is not valid JSON ({e}: cut short or overwritten?): {role} (restore it from a copy)"
    try:
        return validate_info(info), ""
    except InfoError as e:
        return None, f"is unusable: {e}"


def read_info(root: Path) -> dict:
    """``meta/info.json`` of the dataset at ``root``, parsed and validated.

    Raises:
        tether.robot.dataset.DatasetError: the file is missing, unreadable, not JSON, or a field
            tether needs is missing or wrong; the message says which and what the file is for.
    """
    from tether.robot.dataset.reader import DatasetError

    if not (root / fmt.INFO_PATH).exists():
        raise DatasetError(f"{root} is not a dataset: {fmt.INFO_PATH} is missing")
    info, why = _load_info(root)
    if info is None:
        raise DatasetError(f"{root}: {fmt.INFO_PATH} {why}")
    return info


def episodes_of(indices: list[int]) -> str:
    """``episode 3`` or ``episodes 0, 1, 2`` (at most 5 named)."""
    if len(indices) == 1:
        return f"episode {indices[0]}"
    shown = ", ".join(map(str, indices[:5]))
    return f"episodes {shown}{', ...' if len(indices) > 5 else ''}"


def data_role(indices: list[int]) -> str:
    """Why a data file is needed, for a message."""
    return f"it holds the frames (observations, actions, rewards) of {episodes_of(indices)}"


def video_role(key: str, indices: list[int]) -> str:
    """Why a video file is needed, for a message."""
    return f"it holds camera {key}'s frames of {episodes_of(indices)}"


def _error(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:200] if text else type(e).__name__


class _Checker:
    def __init__(self, root: Path, decode: bool):
        self.root = Path(root)
        self.report = CheckReport(self.root, decoded=decode)
        self.decode = decode

    def problem(self, rel: str, message: str) -> None:
        self.report.problems.append(f"{rel} {message}")

    def note(self, rel: str, message: str) -> None:
        self.report.notes.append(f"{rel} {message}")

    # ------------------------------------------------------------------------------ metadata
    def info(self) -> dict | None:
        self.report.files += 1
        info, why = _load_info(self.root)
        if info is None:
            self.problem(fmt.INFO_PATH, why)
            return None
        spec = info.get("tether", {}).get("spec")
        if spec is not None:
            from tether.robot.spec import RobotSpec, SpecError

            try:
                parsed = RobotSpec.from_dict(spec)
            except (SpecError, ValueError, TypeError, KeyError) as e:
                self.problem(fmt.INFO_PATH, f"has a tether.spec that is not a robot spec ({_error(e)}): "
                             "it is what a robot and a policy are checked against")
            else:
                for key, f in {**parsed.observation, "action": parsed.action}.items():
                    declared = info["features"].get(key)
                    want = "video" if f.is_image else f.dtype
                    if declared is None or declared["dtype"] != want or tuple(declared["shape"]) != tuple(f.shape):
                        shown = declared and (declared["dtype"], declared["shape"])
                        self.problem(fmt.INFO_PATH, f"declares feature {key!r} as {shown} but the robot "
                                     f"spec says {(want, list(f.shape))}")
        return info

    def tasks(self) -> list[str] | None:
        import pyarrow.parquet as pq

        path = self.root / fmt.TASKS_PATH
        self.report.files += 1
        if not path.exists():
            self.problem(fmt.TASKS_PATH, f"is missing: it holds {ROLES[fmt.TASKS_PATH]}")
            return None
        try:
            table = pq.read_table(path)
        except Exception as e:  # noqa: BLE001 - any reader failure is the file's problem
            self.problem(fmt.TASKS_PATH, f"cannot be read ({_error(e)}): it holds {ROLES[fmt.TASKS_PATH]}")
            return None
        names = "task" if "task" in table.column_names else "__index_level_0__"
        if "task_index" not in table.column_names or names not in table.column_names:
            self.problem(fmt.TASKS_PATH, f"has columns {table.column_names}, not task_index and task")
            return None
        order = table.column("task_index").to_pylist()
        if sorted(order) != list(range(len(order))):
            self.problem(fmt.TASKS_PATH, f"has task_index {order}, not 0..{len(order) - 1}")
            return None
        tasks = table.column(names).to_pylist()
        return [tasks[order.index(i)] for i in range(len(order))]

    def episodes(self, info: dict, tasks: list[str] | None) -> list[dict] | None:
        import pyarrow.parquet as pq

        folder = self.root / "meta" / "episodes"
        files = sorted(folder.rglob("*.parquet")) if folder.exists() else []
        committed = info.get("total_episodes")
        rows: list[dict] = []
        for path in files:
            rel = str(path.relative_to(self.root))
            self.report.files += 1
            try:
                rows.extend(pq.read_table(path).to_pylist())
            except Exception as e:  # noqa: BLE001
                self.problem(rel, f"cannot be read ({_error(e)}): it is part of {ROLES['meta/episodes']}")
                return None
        if committed is None:
            self.problem(fmt.INFO_PATH, "lacks total_episodes: the count of committed episodes, "
                         "the only record of which ones were finished")
            return None
        if not files and committed > 0:
            self.problem(fmt.EPISODES_PATH, f"is missing but {fmt.INFO_PATH} counts {committed} "
                         f"episodes: it is {ROLES['meta/episodes']}")
            return None
        required = ["episode_index", "length", "tasks", "data/chunk_index", "data/file_index",
                    "dataset_from_index", "dataset_to_index"]
        video_keys = [k for k, f in info["features"].items() if f["dtype"] == "video"]
        for key in video_keys:
            required += [f"videos/{key}/chunk_index", f"videos/{key}/file_index", f"videos/{key}/from_timestamp"]
        rel = fmt.EPISODES_PATH if len(files) == 1 else "meta/episodes"
        for row in rows:
            missing = [k for k in required if row.get(k) is None]
            if missing:
                self.problem(rel, f"lists episode {row.get('episode_index')} without {', '.join(missing[:4])}"
                             f"{', ...' if len(missing) > 4 else ''}")
                return None
        rows.sort(key=lambda r: r["episode_index"])
        indices = [r["episode_index"] for r in rows]
        if len(set(indices)) != len(indices):
            self.problem(rel, "lists an episode index twice")
            return None
        if len(rows) < committed:
            self.problem(rel, f"lists {len(rows)} episodes but {fmt.INFO_PATH} counts {committed}: "
                         f"it is {ROLES['meta/episodes']}")
            return None
        listed, extra = rows[:committed], rows[committed:]
        if [r["episode_index"] for r in listed] != list(range(committed)):
            shown = ", ".join(str(r["episode_index"]) for r in listed[:5])
            self.problem(rel, f"lists episodes {shown}{', ...' if committed > 5 else ''} where "
                         f"{fmt.INFO_PATH} commits 0..{committed - 1}")
            return None
        for r in extra:
            self.note(rel, f"lists episode {r['episode_index']}, which {fmt.INFO_PATH} does not count: a "
                      "recording stopped while it was being written (not part of the dataset)")
        start = 0
        for r in listed:
            n = r["length"]
            if not isinstance(n, int) or n < 1:
                self.problem(rel, f"gives episode {r['episode_index']} length {n!r}")
                return None
            if r["dataset_to_index"] - r["dataset_from_index"] != n or r["dataset_from_index"] != start:
                self.problem(rel, f"gives episode {r['episode_index']} rows {r['dataset_from_index']}.."
                             f"{r['dataset_to_index']} for length {n} (the episode before ends at {start})")
                return None
            start += n
            if tasks is not None:
                unknown = [t for t in r["tasks"] if t not in tasks]
                if unknown:
                    self.problem(rel, f"gives episode {r['episode_index']} task {unknown[0]!r}, which "
                                 f"{fmt.TASKS_PATH} lacks")
        frames = info.get("total_frames")
        if frames is not None and frames != start:
            self.problem(fmt.INFO_PATH, f"counts {frames} frames (total_frames) but the {committed} "
                         f"episodes listed hold {start}")
        self.report.episodes, self.report.frames = committed, start
        self._listed_frames = start + sum(r["length"] for r in extra if isinstance(r["length"], int))
        return listed

    # --------------------------------------------------------------------------------- files
    def data(self, info: dict, episodes: list[dict]) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        by_file: dict[Path, list[dict]] = defaultdict(list)
        for ep in episodes:
            try:
                path = self.root / info["data_path"].format(chunk_index=ep["data/chunk_index"],
                                                            file_index=ep["data/file_index"])
            except (KeyError, IndexError, ValueError) as e:
                self.problem(fmt.INFO_PATH, f"has a data_path {info['data_path']!r} that cannot be filled ({_error(e)})")
                return
            by_file[path].append(ep)
        columns = [k for k, f in info["features"].items() if f["dtype"] not in ("video", "image")]
        for path, eps in by_file.items():
            rel = str(path.relative_to(self.root))
            indices = [e["episode_index"] for e in eps]
            self.report.files += 1
            if not path.exists():
                self.problem(rel, f"is missing: {data_role(indices)}")
                continue
            try:
                parquet = pq.ParquetFile(path)
                names = parquet.schema_arrow.names
                rows = parquet.metadata.num_rows
            except Exception as e:  # noqa: BLE001
                self.problem(rel, f"is not a readable parquet file ({_error(e)}; cut short?): {data_role(indices)}")
                continue
            missing = [c for c in columns if c not in names]
            if missing:
                self.problem(rel, f"lacks column{'s' * (len(missing) > 1)} {', '.join(missing)} that "
                             f"{fmt.INFO_PATH} declares")
                continue
            needed = sum(e["length"] for e in eps)
            if rows < needed:
                self.problem(rel, f"holds {rows} rows but {episodes_of(indices)} need {needed}")
                continue
            if not self.decode:
                continue
            try:
                table = parquet.read()
            except Exception as e:  # noqa: BLE001
                self.problem(rel, f"cannot be read ({_error(e)}): {data_role(indices)}")
                continue
            episode_index = table.column("episode_index").to_numpy() if "episode_index" in names else None
            frame_index = table.column("frame_index").to_numpy() if "frame_index" in names else None
            index = table.column("index").to_numpy() if "index" in names else None
            for ep in eps:
                if episode_index is None:
                    break
                where = np.flatnonzero(episode_index == ep["episode_index"])
                n = ep["length"]
                if len(where) != n:
                    self.problem(rel, f"holds {len(where)} rows of episode {ep['episode_index']}, "
                                 f"whose length is {n}")
                    continue
                if frame_index is not None and not np.array_equal(frame_index[where], np.arange(n)):
                    self.problem(rel, f"holds episode {ep['episode_index']} with frame_index not 0..{n - 1}")
                if index is not None and not np.array_equal(
                        index[where], np.arange(ep["dataset_from_index"], ep["dataset_to_index"])):
                    self.problem(rel, f"holds episode {ep['episode_index']} with index not "
                                 f"{ep['dataset_from_index']}..{ep['dataset_to_index'] - 1}")
            for key in columns:
                column = table.column(key)
                width = int(np.prod(info["features"][key]["shape"] or [1]))
                typ = column.type
                if pa.types.is_fixed_size_list(typ) and typ.list_size != width:
                    self.problem(rel, f"holds {typ.list_size} values a row in column {key}, "
                                 f"{fmt.INFO_PATH} declares {width}")

    def videos(self, info: dict, episodes: list[dict]) -> None:
        import av

        fps = float(info["fps"])
        for key, feature in info["features"].items():
            if feature["dtype"] != "video":
                continue
            by_file: dict[Path, list[dict]] = defaultdict(list)
            for ep in episodes:
                try:
                    path = self.root / info["video_path"].format(
                        video_key=key, chunk_index=ep[f"videos/{key}/chunk_index"],
                        file_index=ep[f"videos/{key}/file_index"])
                except (KeyError, IndexError, ValueError) as e:
                    self.problem(fmt.INFO_PATH, f"has a video_path {info['video_path']!r} that cannot be filled ({_error(e)})")
                    return
                by_file[path].append(ep)
            h, w = feature["shape"][:2]
            for path, eps in by_file.items():
                rel = str(path.relative_to(self.root))
                indices = [e["episode_index"] for e in eps]
                self.report.files += 1
                if not path.exists():
                    self.problem(rel, f"is missing: {video_role(key, indices)}")
                    continue
                needed = max(int(round(e[f"videos/{key}/from_timestamp"] * fps)) + e["length"] for e in eps)
                try:
                    with av.open(str(path)) as container:
                        if not container.streams.video:
                            self.problem(rel, f"has no video stream: {video_role(key, indices)}")
                            continue
                        stream = container.streams.video[0]
                        size = (stream.codec_context.height, stream.codec_context.width)
                        if size not in ((h, w), (h + h % 2, w + w % 2)):
                            self.problem(rel, f"is {size[0]}x{size[1]} pixels, the feature {key} "
                                         f"is {h}x{w}")
                            continue
                        if self.decode:
                            frames = sum(1 for _ in container.decode(stream))
                        else:
                            frames = sum(1 for p in container.demux(stream) if p.size)
                except Exception as e:  # noqa: BLE001 - FFmpeg's errors: a damaged file
                    self.problem(rel, f"cannot be {'decoded' if self.decode else 'read'} ({_error(e)}; "
                                 f"cut short or overwritten?): {video_role(key, indices)}")
                    continue
                if frames < needed:
                    self.problem(rel, f"holds {frames} frames but {episodes_of(indices)} need {needed}")

    def stats(self, info: dict) -> None:
        path = self.root / fmt.STATS_PATH
        if self.report.episodes == 0:
            return
        self.report.files += 1
        if not path.exists():
            self.problem(fmt.STATS_PATH, f"is missing: it holds {ROLES[fmt.STATS_PATH]}")
            return
        try:
            stats = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            self.problem(fmt.STATS_PATH, f"is not valid JSON ({_error(e)}): it holds {ROLES[fmt.STATS_PATH]}")
            return
        if not isinstance(stats, dict):
            self.problem(fmt.STATS_PATH, f"holds a JSON {type(stats).__name__}, not statistics per feature")
            return
        import numpy as np

        frames = {self.report.frames, getattr(self, "_listed_frames", self.report.frames)}
        for key, feature in info["features"].items():
            if feature["dtype"] == "string":
                continue
            entry = stats.get(key)
            if entry is None and not (key == "action" or key.startswith("observation.")):
                continue  # only what training normalizes must be there (LeRobot may leave others out)
            if not isinstance(entry, dict):
                self.problem(fmt.STATS_PATH, f"has no statistics of {key} (tether dataset stats "
                             "DATASET --recompute rewrites them)")
                continue
            missing = [s for s in STAT_KEYS if s not in entry]
            if missing:
                self.problem(fmt.STATS_PATH, f"lacks {', '.join(missing)} of {key}")
                continue
            try:
                values = {s: np.asarray(entry[s], np.float64) for s in STAT_KEYS}
            except (TypeError, ValueError):
                self.problem(fmt.STATS_PATH, f"holds statistics of {key} that are not numbers")
                continue
            size = feature["shape"][-1] if feature["dtype"] in ("video", "image") else int(np.prod(feature["shape"] or [1]))
            if any(values[s].size != size for s in ("min", "max", "mean", "std")):
                self.problem(fmt.STATS_PATH, f"holds {values['mean'].size} values of each statistic of "
                             f"{key}, the feature has {size}")
            elif not all(np.isfinite(v).all() for v in values.values()):
                self.problem(fmt.STATS_PATH, f"holds NaN or inf in {key}'s statistics (tether dataset stats "
                             "DATASET --recompute rewrites them)")
            elif (feature["dtype"] not in ("video", "image")  # LeRobot counts sampled frames there
                  and int(values["count"].reshape(-1)[0]) not in frames):
                self.problem(fmt.STATS_PATH, f"counts {int(values['count'].reshape(-1)[0])} frames of "
                             f"{key}, the dataset holds {self.report.frames}")

    def unlisted(self, info: dict, episodes: list[dict] | None) -> None:
        listed: set[Path] = set()
        video_keys = [k for k, f in info["features"].items() if f["dtype"] == "video"]
        for ep in episodes or []:
            try:
                listed.add(self.root / info["data_path"].format(
                    chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"]))
                for key in video_keys:
                    listed.add(self.root / info["video_path"].format(
                        video_key=key, chunk_index=ep[f"videos/{key}/chunk_index"],
                        file_index=ep[f"videos/{key}/file_index"]))
            except (KeyError, IndexError, ValueError):
                return
        for sub in ("data", "videos"):
            folder = self.root / sub
            for path in sorted(folder.rglob("*")) if folder.exists() else []:
                if path.is_file() and path not in listed:
                    self.note(str(path.relative_to(self.root)), "is listed by no committed episode (left "
                              "by an unfinished one? collect --resume removes those)")


def check_dataset(root: Path | str, decode: bool = True) -> CheckReport:
    """Verify every file of the dataset at ``root`` (see the module docstring); reads only.

    Args:
        root: a LeRobotDataset v3.0 folder (tether's or LeRobot's).
        decode: read every data column and decode every video frame (slow on large datasets:
            about the cost of one pass of video decoding); False checks footers, schemas, row
            counts and video packets only (what ``info``, ``--resume`` and training check first).

    Returns:
        A ``CheckReport``; never raises for a damaged dataset (each problem is a line of it).
    """
    checker = _Checker(Path(root), decode)
    if not checker.root.is_dir():
        checker.report.problems.append(
            f"{checker.root} {'is not a folder' if checker.root.exists() else 'does not exist'}")
        return checker.report
    stage = fmt.INFO_PATH
    try:
        info = checker.info()
        if info is None:
            return checker.report
        stage = fmt.TASKS_PATH
        tasks = checker.tasks()
        stage = "meta/episodes"
        episodes = checker.episodes(info, tasks)
        if episodes is not None:
            stage = "data"
            checker.data(info, episodes)
            stage = "videos"
            checker.videos(info, episodes)
            stage = fmt.STATS_PATH
            checker.stats(info)
            checker.unlisted(info, episodes)
    except Exception as e:  # noqa: BLE001 - values of kinds no step expects: still one line
        checker.problem(stage, f"holds values the check cannot make sense of ({_error(e)})")
    return checker.report


def require_intact(root: Path | str, decode: bool = False, ignore_stats: bool = False,
                   doing: str = "") -> CheckReport:
    """``check_dataset`` and refuse a damaged dataset.

    Args:
        doing: what the caller was about to do, for the message (e.g. ``"resume"``).
        ignore_stats: leave ``meta/stats.json`` out (a caller about to rewrite it).

    Returns:
        The report (its notes may list unfinished episodes' files).

    Raises:
        tether.robot.dataset.DatasetError: one line: the number of problems, the first one, and
            that ``tether dataset check ROOT`` lists them all.
    """
    from tether.robot.dataset.reader import DatasetError

    read_info(Path(root))  # no dataset, or an unusable info.json: the reader's own message
    report = check_dataset(root, decode=decode)
    problems = [p for p in report.problems if not (ignore_stats and p.startswith(fmt.STATS_PATH))]
    if problems:
        n = len(problems)
        more = f" (and {n - 1} more)" if n > 1 else ""
        if doing:
            raise DatasetError(f"will not {doing} {root}: {problems[0]}{more}; nothing was changed: "
                               "restore the damaged files from a copy, or record into a new dataset "
                               f"(tether dataset check {root} lists every problem)")
        raise DatasetError(f"{root}: {problems[0]}{more} (tether dataset check {root} lists every problem)")
    return report
