"""Dataset surgery: merge datasets, split one into several, recompute statistics.

Every output is written episode by episode through ``DatasetWriter.add_episode``, so it is a
regular, crash-safe tether dataset (an interrupted merge or split leaves a valid dataset holding
the episodes finished so far), its tasks are re-indexed in order of first appearance and its
global ``index`` column is contiguous from 0. The price is that camera videos are decoded and
encoded again (H.264 is lossy: each generation loses a little, about 1-2 grey levels per pixel
on smooth images) and that image statistics are recomputed from the re-encoded frames.

Only datasets that carry a tether robot spec (``meta/info.json`` key ``tether``) can be merged or
split, since the writer needs it; ``recompute_stats`` works on any LeRobotDataset v3.0 folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tether.robot.dataset import format as fmt
from tether.robot.dataset.format import OUTCOME_FEATURES
from tether.robot.dataset.reader import Dataset, DatasetError
from tether.robot.dataset.stats import ImageSample, aggregate, feature_stats, to_jsonable
from tether.robot.dataset.writer import DatasetWriter
from tether.robot.spec import RobotSpec


class DatasetEditError(DatasetError):
    """Datasets cannot be merged or split as asked: mismatched specs or fps, no tether spec, or a
    bad episode selection (out of range, overlapping, empty)."""


def _spec_of(ds: Dataset) -> RobotSpec:
    if ds.spec is None:
        raise DatasetEditError(
            f"{ds.root} has no tether robot spec in {fmt.INFO_PATH}: only datasets recorded by "
            "tether can be rewritten"
        )
    return ds.spec


_differences = fmt.json_differences


def check_compatible(first: Dataset, other: Dataset) -> None:
    """Check that ``other`` holds the same kind of episodes as ``first``: same robot spec and fps.

    Raises:
        DatasetEditError: naming every difference (``spec.<field>: first vs other``, ``fps``).
    """
    problems = _differences(_spec_of(first).to_dict(), _spec_of(other).to_dict(), "spec")
    if not math.isclose(first.fps, other.fps):
        problems.append(f"fps: {first.fps:g} vs {other.fps:g}")
    if problems:
        raise DatasetEditError(
            f"{other.root} does not match {first.root}: " + "; ".join(problems)
        )


def episode_frames(ds: Dataset, index: int) -> tuple[dict[str, np.ndarray], str]:
    """Episode ``index`` of ``ds`` as ``DatasetWriter.add_episode`` takes it, and its task (the
    first of the episode's tasks: the writer stores one task per episode).

    Returns:
        (frames, task): feature key -> array [length, *feature shape] for each observation (images
        decoded from the video, uint8 [length, H, W, 3]), ``action`` and the ``next.*`` columns.

    Raises:
        DatasetEditError: ``index`` out of range, or no tether spec.
    """
    spec = _spec_of(ds)
    check_episode_index(ds, index)
    data = ds.episode(index)
    n = int(ds.episodes[index]["length"])
    frames: dict[str, np.ndarray] = {}
    for key, feature in {**spec.observation, "action": spec.action}.items():
        if feature.is_image:
            h, w = feature.shape[:2]
            # the encoder pads odd sizes to even ones; the feature's shape is the true one
            frames[key] = ds.video(key, index)[:n, :h, :w]
        else:
            frames[key] = data[key].reshape(n, *feature.shape)
    for key in OUTCOME_FEATURES:
        if key in data:
            frames[key] = data[key].reshape(n)
    return frames, ds.episodes[index]["tasks"][0]


def check_episode_index(ds: Dataset, index: int) -> None:
    """Raise ``DatasetEditError`` unless ``0 <= index < len(ds)``."""
    if not 0 <= index < len(ds):
        last = f"0-{len(ds) - 1}" if len(ds) else "none"
        raise DatasetEditError(
            f"episode {index} is out of range: {ds.root} has {len(ds)} episodes ({last})"
        )


def _check_output(out: Path, sources: Sequence[Path]) -> None:
    for source in sources:
        if Path(out).resolve() == Path(source).resolve():
            raise DatasetEditError(f"the output {out} is one of the input datasets")


OnEpisode = Callable[[int, int], None]
"""Called with (episodes written, episodes to write) after each episode a merge or split writes."""


def _copy(ds: Dataset, episodes: Sequence[int], writer: DatasetWriter,
          on_episode: OnEpisode | None = None, done: int = 0, total: int = 0) -> int:
    """Write ``episodes`` of ``ds`` with ``writer``; ``done`` episodes of ``total`` were written
    before (for ``on_episode``). Returns how many are written now."""
    for i in episodes:
        frames, task = episode_frames(ds, i)
        writer.add_episode(frames, task)
        done += 1
        if on_episode is not None:
            on_episode(done, total)
    return done


def merge(sources: Sequence[Path | str], out: Path | str, overwrite: bool = False,
          on_episode: OnEpisode | None = None) -> Dataset:
    """Write the episodes of ``sources``, in order, into one new dataset at ``out``.

    Episode ``k`` of source ``j`` becomes episode ``sum(len(sources[:j])) + k``; tasks are
    re-indexed in order of first appearance; ``index`` runs 0..total_frames-1. Videos are
    re-encoded (see the module docstring).

    Args:
        sources: dataset folders with identical robot specs and fps.
        out: the new dataset's folder (not one of ``sources``).
        overwrite: replace a dataset already at ``out``.
        on_episode: progress callback, (episodes written, total), after each episode.

    Returns:
        The merged dataset.

    Raises:
        DatasetError: a source is not a readable dataset.
        DatasetEditError: no sources, a spec or fps mismatch (naming each difference), a source
            without a tether spec, or ``out`` among the sources.
        DatasetExistsError: ``out`` holds a dataset and ``overwrite`` is False.
    """
    if not sources:
        raise DatasetEditError("merge needs at least one dataset")
    datasets = [Dataset(s) for s in sources]
    for ds in datasets[1:]:
        check_compatible(datasets[0], ds)
    _check_output(Path(out), [ds.root for ds in datasets])
    writer = DatasetWriter(out, _spec_of(datasets[0]), datasets[0].fps, overwrite=overwrite)
    done, total = 0, sum(len(ds) for ds in datasets)
    for ds in datasets:
        done = _copy(ds, range(len(ds)), writer, on_episode, done, total)
    return Dataset(out)


def parse_episodes(text: str, count: int) -> list[int]:
    """Episode indices from a selection string, Python-slice style, against ``count`` episodes.

    ``"0:40"`` is 0..39, ``"40:"`` is 40 to the end, ``":-10"`` all but the last 10, ``"7"`` is
    one episode, and comma-separated parts are concatenated: ``"0:10,20:30"``.

    Raises:
        DatasetEditError: malformed text, or an index outside ``0..count-1``.
    """
    out: list[int] = []
    for part in text.split(","):
        bounds = part.split(":")
        try:
            values = [int(x) if x.strip() else None for x in bounds]
        except ValueError:
            values = []
        if not 1 <= len(values) <= 2 or values == [None]:
            raise DatasetEditError(
                f"bad episode selection {text!r}: expected e.g. '0:40', '40:', '7' or '0:10,20:30'"
            )
        for v in values:
            # a slice would clip silently; a bound past the end is more likely a mistake
            if v is not None and not -count <= v <= count - (len(values) == 1):
                raise DatasetEditError(
                    f"episode {v} in {text!r} is out of range: the dataset has {count} episodes"
                )
        if len(values) == 1:
            out.append(values[0] % count)
        else:
            out.extend(range(count)[slice(*values)])
    return out


def fraction_split(count: int, fractions: Sequence[float], seed: int = 0) -> list[list[int]]:
    """Shuffle episodes ``0..count-1`` with ``seed`` and cut them into parts of these fractions.

    Part sizes are ``floor(f * count)`` plus one for the parts with the largest remainders until
    ``round(sum(fractions) * count)`` episodes are used (fractions may sum to less than 1 to leave
    episodes out). Each part is returned sorted, so episodes keep their recorded order.

    Raises:
        DatasetEditError: a fraction <= 0, fractions summing to more than 1, or an empty part.
    """
    f = np.asarray(fractions, dtype=float)
    if len(f) == 0 or np.any(f <= 0) or f.sum() > 1 + 1e-9:
        raise DatasetEditError(f"fractions must be positive and sum to at most 1, got {list(fractions)}")
    exact = f * count
    sizes = np.floor(exact).astype(int)
    extra = min(int(round(f.sum() * count)), count) - sizes.sum()
    sizes[np.argsort(-(exact - sizes), kind="stable")[:extra]] += 1
    if np.any(sizes == 0):
        raise DatasetEditError(
            f"{count} episodes cannot be split into fractions {list(fractions)}: a part would be empty"
        )
    order = np.random.default_rng(seed).permutation(count)
    bounds = np.cumsum([0, *sizes])
    return [sorted(order[a:b].tolist()) for a, b in zip(bounds[:-1], bounds[1:])]


def task_split(ds: Dataset) -> dict[str, list[int]]:
    """Episode indices of each task of ``ds`` (the first task of each episode), by task."""
    parts: dict[str, list[int]] = {}
    for i, ep in enumerate(ds.episodes):
        parts.setdefault(ep["tasks"][0], []).append(i)
    return parts


def split(
    source: Path | str,
    outs: Sequence[Path | str],
    episodes: Sequence[Sequence[int]],
    overwrite: bool = False,
    on_episode: OnEpisode | None = None,
) -> list[Dataset]:
    """Write the episodes ``episodes[k]`` of ``source`` into a new dataset ``outs[k]``, for each k.

    Build the selections with ``parse_episodes`` ("0:40"), ``fraction_split`` (shuffled fractions
    with a seed) or ``task_split`` (one part per task). Episodes are written in the order given;
    each output re-indexes its tasks and frames from 0. Videos are re-encoded. ``on_episode``:
    progress callback, (episodes written, total over all outputs), after each episode.

    Raises:
        DatasetError: ``source`` is not a readable dataset.
        DatasetEditError: as many outputs as selections is required; every selection must be
            non-empty, in range and disjoint from the others; no output may be ``source``.
        DatasetExistsError: an output holds a dataset and ``overwrite`` is False.
    """
    ds = Dataset(source)
    _spec_of(ds)
    if len(outs) != len(episodes):
        raise DatasetEditError(f"{len(outs)} output folders for {len(episodes)} episode selections")
    owner: dict[int, int] = {}
    for k, selection in enumerate(episodes):
        if not selection:
            raise DatasetEditError(f"selection {k} (for {outs[k]}) holds no episode")
        for i in selection:
            check_episode_index(ds, i)
            if owner.setdefault(i, k) != k:
                raise DatasetEditError(
                    f"episode {i} is in two selections ({owner[i]} and {k}): splits must be disjoint"
                )
    for out in outs:
        _check_output(Path(out), [ds.root])
    results = []
    done, total = 0, sum(len(selection) for selection in episodes)
    for out, selection in zip(outs, episodes):
        writer = DatasetWriter(out, ds.spec, ds.fps, overwrite=overwrite)
        done = _copy(ds, selection, writer, on_episode, done, total)
        results.append(Dataset(out))
    return results


def _write_parquet_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def recompute_stats(root: Path | str) -> dict[str, dict[str, np.ndarray]]:
    """Recompute every episode's ``stats/*`` columns and ``meta/stats.json`` from the data files
    and decoded videos (as the writer computes them), e.g. after editing files by hand or for a
    dataset whose statistics are missing. Not for a dataset that is being recorded to.

    Each ``meta/episodes`` file is rewritten in place (atomically), then ``meta/stats.json``.

    Returns:
        feature -> stat name -> array, the dataset statistics written to ``meta/stats.json``.

    Raises:
        DatasetError: not a readable dataset.
    """
    ds = Dataset(root)
    features = {k: f for k, f in ds.features.items() if f["dtype"] != "string"}
    columns = [k for k, f in features.items() if f["dtype"] != "video"]
    per_episode: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    for i, ep in enumerate(ds.episodes):
        data = ds.episode(i, [c for c in columns if c != "episode_index"] + ["episode_index"])
        stats = {}
        for key, feature in features.items():
            if feature["dtype"] == "video":
                h, w = feature["shape"][:2]
                # sampled as the writer samples a camera stream, so both give the same numbers
                sample = ImageSample()
                for image in ds.video(key, i)[: ep["length"], :h, :w]:
                    sample.add(image)
                stats[key] = sample.stats()
            else:
                stats[key] = feature_stats(data[key])
        per_episode[ep["episode_index"]] = stats
    for path in sorted((ds.root / "meta" / "episodes").rglob("*.parquet")):
        rows = pq.read_table(path).to_pylist()
        for row in rows:
            for key, feature_stat in per_episode.get(row["episode_index"], {}).items():
                for name, value in feature_stat.items():
                    row[f"stats/{key}/{name}"] = value.tolist()
        _write_parquet_atomic(pa.Table.from_pylist(rows), path)
    dataset_stats = (
        {k: aggregate([s[k] for s in per_episode.values()]) for k in features} if per_episode else {}
    )
    fmt.write_json_atomic(ds.root / fmt.STATS_PATH, to_jsonable(dataset_stats))
    return dataset_stats


def load_stats(root: Path | str) -> dict[str, dict[str, np.ndarray]]:
    """``meta/stats.json`` of a dataset: feature -> stat name -> array.

    Raises:
        DatasetError: not a dataset, or it has no (or an unreadable) ``meta/stats.json``
            (``recompute_stats`` writes it).
    """
    ds = Dataset(root)
    path = ds.root / fmt.STATS_PATH
    if not path.exists():
        raise DatasetError(f"{ds.root} has no {fmt.STATS_PATH}: recompute it (tether dataset stats --recompute)")
    try:
        raw = json.loads(path.read_text())
        return {k: {s: np.asarray(v) for s, v in d.items()} for k, d in raw.items()}
    except (ValueError, TypeError, AttributeError) as e:
        raise DatasetError(f"{ds.root}: {fmt.STATS_PATH} is not valid statistics ({e}): recompute it "
                           "(tether dataset stats --recompute)") from None
