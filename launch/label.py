"""``tether label``: preference labels for pairs of a dataset's camera frames.

::

    tether label DATASET --labeller vlm --pairs 500 --task "open the drawer" \\
        --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct
    tether label DATASET --labeller noisy-oracle --pairs 500 --flip-prob 0.1 --abstain-prob 0.1
    tether label DATASET --labeller clip --clip-pretrained laion2b_s34b_b79k --task "..."

Pairs: ``--pairs`` distinct frame pairs of one camera drawn with ``--seed``; each pair is, with
probability ``--same-episode-fraction`` (0.5), two frames of one episode (chosen with probability
proportional to its length; such pairs teach progress within an attempt) and otherwise two frames
of different episodes (uniform over all frames; these compare attempts). The order of the two
images in a pair is random, so labels 0 and 1 are equally likely a priori. Pairs are drawn one
after the other from one random stream: a larger ``--pairs`` with the same seed extends the
same list, and the labels already paid for are reused.

Labels (0 = the first image better achieves the task, 1 = the second, -1 = no difference or
unsure) go through a :class:`~tether.perception.labellers.LabelStore` (default
``DATASET/labels/store.sqlite``): an interrupted run resumes, and a repeated one makes no calls.
Outputs, each written atomically: ``DATASET/labels/<name>.parquet`` (columns ``episode_first``,
``frame_first``, ``episode_second``, ``frame_second`` (episode_index and frame_index), ``label``,
``labeller``, ``model``, ``task``; pairs whose requests all failed are left out) and
``DATASET/labels/<name>.json`` (the settings and the report).

True values for the oracles and for the accuracy in the report: the column ``--oracle-key``
(default ``next.reward``; MetaWorld records its dense reward there) at each frame's row. For
``next.reward`` that is the reward of the step taken from the frame.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import tyro

from tether.launch import UsageError

DatasetPath = Annotated[Path, tyro.conf.arg(metavar="DATASET")]
CHUNK = 256
"""Pairs whose images are held in memory at once."""


@dataclass
class LabelCommand:
    """Label frame pairs of a dataset with preferences (VLM, CLIP or oracle) into DATASET/labels/."""

    dataset: tyro.conf.Positional[DatasetPath]
    labeller: Literal["vlm", "clip", "oracle", "noisy-oracle"] = "vlm"
    """Who answers: an OpenAI-compatible VLM, CLIP similarity, or the true reward (benchmarks)."""
    pairs: int = 100
    """Distinct frame pairs to label."""
    task: str | None = None
    """Task description shown to the labeller; default: the dataset's task when it has one."""
    camera: str | None = None
    """Camera (video feature) to take frames from; default: the dataset's first."""
    seed: int = 0
    """Seed of the pair sampling (and of the noisy oracle)."""
    same_episode_fraction: float = 0.5
    """Probability that a pair's frames come from the same episode."""
    store: Path | None = None
    """Label store (sqlite); default: DATASET/labels/store.sqlite."""
    name: str | None = None
    """Output name under DATASET/labels/; default: the labeller's name."""
    oracle_key: str = "next.reward"
    """Per-frame true reward or progress column, for the oracles and the accuracy report."""
    oracle_margin: float = 0.0
    """True values closer than this count as "no difference" (-1)."""
    flip_prob: float = 0.1
    """noisy-oracle: probability of a flipped label."""
    abstain_prob: float = 0.0
    """noisy-oracle: probability of -1."""
    base_url: str | None = None
    """vlm: endpoint root; default $OPENAI_BASE_URL, else https://api.openai.com/v1. The API key is
    read from $OPENAI_API_KEY only (never a command-line argument, which shells log)."""
    model: str | None = None
    """vlm: model name; default $TETHER_VLM_MODEL."""
    timeout_s: float = 60.0
    """vlm: per-request timeout, seconds."""
    max_retries: int = 5
    """vlm: retries per request (timeouts, 429, 5xx)."""
    requests_per_minute: float = 60.0
    """vlm: rate limit of HTTP requests (two per pair); 0: none."""
    concurrency: int = 4
    """vlm: pairs in flight at once."""
    image_format: Literal["png", "jpeg"] = "png"
    """vlm: image encoding sent."""
    price_input_per_1k: float | None = None
    """vlm: price per 1000 prompt tokens, for the cost estimate."""
    price_output_per_1k: float | None = None
    """vlm: price per 1000 completion tokens, for the cost estimate."""
    clip_model: str = "ViT-B-32"
    """clip: open_clip architecture."""
    clip_pretrained: str | None = "openai"
    """clip: open_clip pretrained tag (weights are downloaded on first use)."""
    clip_margin: float = 0.0
    """clip: similarity difference below which the label is -1."""
    device: str = "cpu"
    """clip: torch device."""
    cache_dir: Path | None = None
    """Decoded-video cache folder (default: $TETHER_CACHE_DIR or ~/.cache/tether/videos)."""
    json: bool = False
    """Print the report as JSON."""


def sample_pairs(lengths: list[int], n: int, same_episode_fraction: float, seed: int) -> np.ndarray:
    """``n`` distinct unordered frame pairs (see the module docstring).

    Args:
        lengths: frames per episode.
        n: pairs wanted.
        same_episode_fraction: probability of a same-episode pair, in [0, 1].
        seed: random seed.

    Returns:
        int64 [n, 4]: (episode position, frame, episode position, frame) per pair; positions index
        ``lengths``.

    Raises:
        UsageError: bad arguments, or fewer than ``n`` distinct pairs exist.
    """
    if not 0.0 <= same_episode_fraction <= 1.0:
        raise UsageError(f"--same-episode-fraction must be in [0, 1], got {same_episode_fraction}")
    if n < 1:
        raise UsageError(f"--pairs must be >= 1, got {n}")
    sizes = np.asarray(lengths, np.int64)
    total = int(sizes.sum())
    possible = total * (total - 1) // 2
    if n > possible:
        raise UsageError(f"--pairs {n} is more than the {possible} distinct frame pairs of the dataset")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    can_same = bool((sizes >= 2).any())
    can_cross = int((sizes > 0).sum()) >= 2
    same_weights = np.where(sizes >= 2, sizes, 0) / max(1, np.where(sizes >= 2, sizes, 0).sum())
    rng = np.random.default_rng(seed)
    seen: set[tuple[int, int]] = set()
    out: list[tuple[int, int, int, int]] = []
    for _ in range(50 * n + 1000):
        if len(out) == n:
            break
        same = (rng.random() < same_episode_fraction and can_same) or not can_cross
        if same:
            ep = int(rng.choice(len(sizes), p=same_weights))
            fa, fb = rng.choice(int(sizes[ep]), 2, replace=False)
            a, b = int(starts[ep] + fa), int(starts[ep] + fb)
        else:
            a = int(rng.integers(total))
            ep_a = int(np.searchsorted(starts, a, side="right") - 1)
            b = int(rng.integers(total - sizes[ep_a]))  # a frame of any other episode
            b = b if b < starts[ep_a] else b + int(sizes[ep_a])
        if (min(a, b), max(a, b)) in seen:
            continue
        seen.add((min(a, b), max(a, b)))
        ep_a = int(np.searchsorted(starts, a, side="right") - 1)
        ep_b = int(np.searchsorted(starts, b, side="right") - 1)
        out.append((ep_a, a - int(starts[ep_a]), ep_b, b - int(starts[ep_b])))
    if len(out) < n:
        raise UsageError(f"found only {len(out)} distinct pairs of the kind asked for; lower --pairs "
                         f"or change --same-episode-fraction")
    return np.asarray(out, np.int64).reshape(-1, 4)


def _labeller(cmd: LabelCommand):
    from tether.perception.labellers import NoisyOracleLabeller, OracleLabeller, VLMConfig, VLMLabeller

    if cmd.labeller == "oracle":
        return OracleLabeller(cmd.oracle_margin)
    if cmd.labeller == "noisy-oracle":
        return NoisyOracleLabeller(cmd.flip_prob, cmd.abstain_prob, cmd.seed, cmd.oracle_margin)
    if cmd.labeller == "clip":
        try:
            from tether.perception.labellers.clip import ClipLabeller

            return ClipLabeller(cmd.clip_model, cmd.clip_pretrained, cmd.clip_margin, cmd.device)
        except ImportError as e:
            raise UsageError(f"--labeller clip needs torch and open_clip: pip install 'tether[train]' ({e})")
    config = VLMConfig(base_url=cmd.base_url, model=cmd.model, timeout_s=cmd.timeout_s,
                       max_retries=cmd.max_retries, requests_per_minute=cmd.requests_per_minute,
                       concurrency=cmd.concurrency, image_format=cmd.image_format)
    try:
        return VLMLabeller(config)
    except ImportError as e:
        raise UsageError(f"--labeller vlm needs httpx: pip install 'tether[label]' ({e})")


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def label_dataset(cmd: LabelCommand) -> dict:
    """Run ``tether label``; returns the report (see :class:`LabelReport`) as a dict with the
    output paths.

    Raises:
        DatasetError: not a dataset. UsageError: bad options (unknown camera, no task, an oracle
        without true values, ...). LabelError, VLMError: see the labellers.
    """
    import pyarrow as pa

    from tether.launch.progress import progress_bar
    from tether.perception.labellers import (
        LabelReport, LabelStore, PreferenceQuery, Prices, label_accuracy, oracle_labels,
    )
    from tether.robot.dataset import Dataset, VideoCache
    from tether.robot.dataset.writer import write_parquet_atomic

    ds = Dataset(cmd.dataset)
    if not ds.video_keys:
        raise UsageError(f"{cmd.dataset} has no camera (video feature) to label")
    camera = cmd.camera or ds.video_keys[0]
    if camera not in ds.video_keys:
        raise UsageError(f"no camera {camera!r} in {cmd.dataset}; it has {', '.join(ds.video_keys)}")
    task = cmd.task
    if task is None:
        if len(ds.tasks) != 1:
            raise UsageError(f"--task is needed: {cmd.dataset} has {len(ds.tasks)} tasks")
        task = ds.tasks[0]
    has_truth = cmd.oracle_key in ds.features
    if cmd.labeller in ("oracle", "noisy-oracle") and not has_truth:
        raise UsageError(f"--labeller {cmd.labeller} needs true values, but {cmd.dataset} has no "
                         f"column {cmd.oracle_key!r} (--oracle-key)")
    pairs = sample_pairs([e["length"] for e in ds.episodes], cmd.pairs, cmd.same_episode_fraction, cmd.seed)
    truth = None
    if has_truth:
        truth = [ds.episode(i, [cmd.oracle_key])[cmd.oracle_key].reshape(-1).astype(np.float64)
                 for i in range(len(ds))]
    prices = None
    if cmd.price_input_per_1k is not None or cmd.price_output_per_1k is not None:
        prices = Prices(cmd.price_input_per_1k or 0.0, cmd.price_output_per_1k or 0.0)
    labels_dir = Path(cmd.dataset) / "labels"
    name = cmd.name or cmd.labeller
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"--name must be a plain file name, got {name!r}")
    labeller = _labeller(cmd)
    cache = VideoCache(ds, cmd.cache_dir)
    labels = np.full(len(pairs), -1, np.int8)
    stored = np.zeros(len(pairs), bool)
    total = LabelReport()
    try:
        with LabelStore(cmd.store or labels_dir / "store.sqlite", prices) as store, \
                progress_bar(disable=cmd.json) as progress:
            bar = progress.add_task(f"label ({labeller.name})", total=len(pairs))
            for start in range(0, len(pairs), CHUNK):
                chunk = pairs[start:start + CHUNK]
                queries = []
                for ea, fa, eb, fb in chunk:
                    true = (truth[ea][fa], truth[eb][fb]) if truth is not None else (None, None)
                    queries.append(PreferenceQuery(cache.frames(camera, int(ea), [fa])[0],
                                                   cache.frames(camera, int(eb), [fb])[0], task, *true))
                got, report = store.label(
                    labeller, queries, on_progress=lambda done: progress.update(bar, completed=start + done))
                labels[start:start + len(chunk)] = got
                stored[start:start + len(chunk)] = [store.get(store.key(q, labeller)[0]) is not None
                                                    for q in queries]
                for field, value in asdict(report).items():
                    if isinstance(value, int) and field != "compared":
                        setattr(total, field, getattr(total, field) + value)
                if report.cost is not None:
                    total.cost = (total.cost or 0.0) + report.cost
    finally:
        if hasattr(labeller, "close"):
            labeller.close()
    oracle = None
    if truth is not None:
        oracle = oracle_labels([truth[ea][fa] for ea, fa, _, _ in pairs],
                               [truth[eb][fb] for _, _, eb, fb in pairs], cmd.oracle_margin)
        total.accuracy, total.compared = label_accuracy(labels[stored], oracle[stored])

    episode_index = np.array([e["episode_index"] for e in ds.episodes], np.int64)
    keep = stored
    table = pa.table({
        "episode_first": episode_index[pairs[keep, 0]], "frame_first": pairs[keep, 1],
        "episode_second": episode_index[pairs[keep, 2]], "frame_second": pairs[keep, 3],
        "label": pa.array(labels[keep], pa.int8()),
        "labeller": [labeller.name] * int(keep.sum()), "model": [labeller.model] * int(keep.sum()),
        "task": [task] * int(keep.sum()),
    })
    out = labels_dir / f"{name}.parquet"
    write_parquet_atomic(table, out)
    result = {"labels": str(out), "camera": camera, "task": task, "labeller": labeller.name,
              "model": labeller.model, **total.as_dict()}
    if oracle is not None and (oracle == -1).all():
        result["warning"] = f"every pair has equal {cmd.oracle_key}: oracle labels are all -1"
    config = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cmd).items()}
    _atomic_text(labels_dir / f"{name}.json", json.dumps({"config": config, "report": result}, indent=2))
    result["_summary"] = total.summary()
    return result


def main(cmd: LabelCommand) -> None:
    """Entry point of ``tether label``."""
    result = label_dataset(cmd)
    summary = result.pop("_summary")
    if cmd.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['labeller']} ({result['model']}) on {result['camera']}, task {result['task']!r}")
    print(summary)
    if result["failures"]:
        print(f"{result['failures']} pairs got no answer (retries exhausted): run again to ask for them")
    if "warning" in result:
        print(f"warning: {result['warning']}")
    print(f"wrote {result['labels']}")
