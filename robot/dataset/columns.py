"""Add (or replace) a per-frame column in an existing dataset, e.g. a relabelled reward.

Used by reward relabelling (``tether.policies.relabel``, RL-VLM-F's offline follow-up:
Venkataraman et al., 2024, relabel the dataset with a learned reward and run offline RL on it).
numpy and pyarrow only, like the rest of ``tether.robot.dataset``.

Order of writes (each file atomically, through a temporary file and a rename):

1. every data parquet gets the column (a file holding several episodes, as LeRobot packs them,
   is rewritten once with the values of all of them);
2. each ``meta/episodes`` file gets the column's ``stats/<name>/*`` entries;
3. ``meta/stats.json`` gets the column's dataset statistics;
4. ``meta/info.json`` declares the feature, last: it is the commit point. Until it is written,
   readers ignore the undeclared column (``Dataset`` and ``TrainingDataset`` only know declared
   features), so a crash at any moment leaves a readable dataset, and running again rewrites
   every file. Replacing an existing column keeps it declared throughout, with each file
   holding either the old or the new values.

Columns the dataset already had from recording (observations, ``action``, ``next.*``, LeRobot's
defaults) cannot be overwritten: relabelling adds a column and keeps the original reward.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tether.robot.dataset import format as fmt
from tether.robot.dataset.reader import Dataset, DatasetError
from tether.robot.dataset.stats import aggregate, feature_stats, to_jsonable
from tether.robot.dataset.writer import write_parquet_atomic


class ColumnError(DatasetError):
    """A column cannot be added as asked: a protected name, or values that do not fit the
    episodes (count, length, non-finite)."""


PROTECTED_PREFIXES = ("observation.", "action", "next.")


def _check_name(ds: Dataset, name: str, overwrite: bool) -> None:
    if not name or name.strip() != name or "/" in name:
        raise ColumnError(f"bad column name {name!r}")
    if name in fmt.DEFAULT_FEATURES or name.startswith(PROTECTED_PREFIXES):
        raise ColumnError(
            f"{name!r} is a recorded column (observations, action, next.*, LeRobot's defaults): "
            "write derived values under another name, e.g. 'reward.<model>'"
        )
    if name in ds.features and not overwrite:
        raise ColumnError(f"{ds.root} already has a column {name!r}; pass overwrite to replace it")


def add_column(
    root: Path | str,
    name: str,
    values: Sequence[np.ndarray] | Mapping[int, np.ndarray],
    overwrite: bool = True,
    after_file: Callable[[Path], None] | None = None,
) -> Dataset:
    """Write a float32 per-frame column ``name`` into the dataset at ``root``.

    Args:
        root: a LeRobotDataset v3.0 folder (tether's or LeRobot's).
        name: the column, e.g. ``"reward.vlm"``; see the module docstring for forbidden names.
        values: per episode (by position in ``Dataset(root).episodes``, or a mapping
            episode_index -> array), an array [length] (or [length, 1]) of finite numbers, the
            value at each frame in frame order.
        overwrite: replace the column if the dataset already declares it.
        after_file: called with each data file's path after it is rewritten (progress, tests).

    Returns:
        The dataset reopened, with the feature declared (``float32``, shape [1]).

    Raises:
        DatasetError: ``root`` is not a readable dataset.
        ColumnError: a recorded column's name, the column exists and ``overwrite`` is False, a
            wrong number of episodes, an episode's values of the wrong length, or NaN/inf.
    """
    ds = Dataset(root)
    _check_name(ds, name, overwrite)
    by_index = _per_episode(ds, values)
    files: dict[Path, list[int]] = defaultdict(list)
    for i, ep in enumerate(ds.episodes):
        files[ds._data_file(ep)].append(int(ep["episode_index"]))
    for path, episodes in files.items():
        table = pq.read_table(path)
        episode_index = table.column("episode_index").to_numpy()
        frame_index = table.column("frame_index").to_numpy()
        column = np.full(table.num_rows, np.nan, np.float32)
        for e in episodes:
            rows = np.flatnonzero(episode_index == e)
            column[rows] = by_index[e][frame_index[rows]]
        # Rows of episodes the metadata does not list (a packed file may hold uncommitted ones)
        # get 0 rather than NaN, so statistics of the whole file stay finite.
        column[np.isnan(column)] = 0.0
        array = pa.array(column, pa.float32())
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, array)
        else:
            table = table.append_column(name, array)
        write_parquet_atomic(table.replace_schema_metadata(_hf_metadata(table.schema.metadata, name)), path)
        if after_file is not None:
            after_file(path)
    stats = {e: feature_stats(v) for e, v in by_index.items()}
    for path in sorted((ds.root / "meta" / "episodes").rglob("*.parquet")):
        rows = pq.read_table(path).to_pylist()
        for row in rows:
            if row["episode_index"] in stats:
                for stat, value in stats[row["episode_index"]].items():
                    row[f"stats/{name}/{stat}"] = value.tolist()
        write_parquet_atomic(pa.Table.from_pylist(rows), path)
    stats_path = ds.root / fmt.STATS_PATH
    all_stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    if stats:
        all_stats.update(to_jsonable({name: aggregate(list(stats.values()))}))
    fmt.write_json_atomic(stats_path, all_stats)
    info = json.loads((ds.root / fmt.INFO_PATH).read_text())
    info["features"][name] = {"dtype": "float32", "shape": [1], "names": None}
    fmt.write_json_atomic(ds.root / fmt.INFO_PATH, info)  # the commit point, last
    return Dataset(root)


def _per_episode(ds: Dataset, values) -> dict[int, np.ndarray]:
    """episode_index -> float32 [length], checked against the dataset's episodes."""
    indices = [int(ep["episode_index"]) for ep in ds.episodes]
    if isinstance(values, Mapping):
        missing = sorted(set(indices) - set(values))
        extra = sorted(set(values) - set(indices))
        if missing or extra:
            raise ColumnError(f"values must cover exactly the episodes of {ds.root}: "
                              f"missing {missing[:10]}, unknown {extra[:10]}")
        items = [(e, values[e]) for e in indices]
    else:
        if len(values) != len(indices):
            raise ColumnError(f"{len(values)} episodes of values for the {len(indices)} episodes of {ds.root}")
        items = list(zip(indices, values))
    out = {}
    for (e, v), ep in zip(items, ds.episodes):
        v = np.asarray(v, np.float32)
        if v.ndim == 2 and v.shape[1] == 1:
            v = v[:, 0]
        if v.shape != (int(ep["length"]),):
            raise ColumnError(f"episode {e}: values of shape {v.shape}, expected ({ep['length']},)")
        if not np.isfinite(v).all():
            raise ColumnError(f"episode {e}: values hold NaN or inf")
        out[e] = v
    return out


def _hf_metadata(metadata: dict | None, name: str) -> dict | None:
    """Schema metadata with the column added to a Hugging Face ``datasets`` feature list, if the
    file carries one (LeRobot's writer does): ``datasets`` checks it against the columns."""
    if not metadata or b"huggingface" not in metadata:
        return metadata
    hf = json.loads(metadata[b"huggingface"])
    features = hf.get("info", {}).get("features")
    if isinstance(features, dict):
        features[name] = {"dtype": "float32", "_type": "Value"}
    return {**metadata, b"huggingface": json.dumps(hf).encode()}


def remove_column(root: Path | str, name: str) -> Dataset:
    """Undeclare ``name`` (info.json first, so it is never declared without its data), then drop it
    from the data files, episode statistics and ``meta/stats.json``.

    Raises:
        ColumnError: ``name`` is a recorded column or not declared.
    """
    ds = Dataset(root)
    _check_name(ds, name, overwrite=True)
    if name not in ds.features:
        raise ColumnError(f"{ds.root} has no column {name!r}")
    info = json.loads((ds.root / fmt.INFO_PATH).read_text())
    del info["features"][name]
    fmt.write_json_atomic(ds.root / fmt.INFO_PATH, info)
    for path in sorted({ds._data_file(ep) for ep in ds.episodes}):
        table = pq.read_table(path)
        if name in table.column_names:
            write_parquet_atomic(table.drop_columns([name]), path)
    for path in sorted((ds.root / "meta" / "episodes").rglob("*.parquet")):
        table = pq.read_table(path)
        drop = [c for c in table.column_names if c.startswith(f"stats/{name}/")]
        if drop:
            write_parquet_atomic(table.drop_columns(drop), path)
    stats_path = ds.root / fmt.STATS_PATH
    if stats_path.exists():
        stats = json.loads(stats_path.read_text())
        stats.pop(name, None)
        fmt.write_json_atomic(stats_path, stats)
    return Dataset(root)
