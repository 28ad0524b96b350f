"""``tether dataset info|view|merge|split|stats|replay``: inspect, edit and replay datasets.

::

    tether dataset info DATASET [--json]                  episodes, frames, fps, features, tasks
    tether dataset check DATASET [--quick] [--json]       verify every file, one line per problem
    tether dataset view DATASET [--episodes 0 3] [--out DIR]
                                                          episode_NNN.mp4 + episode_NNN.png each
    tether dataset view DATASET --rerun [--episode N] [--save FILE.rrd]
                                                          a Rerun viewer (or recording) of it all
    tether dataset merge A B [C ...] --out MERGED         same robot spec and fps required
    tether dataset split DATASET --out TRAIN VAL --episodes 0:40 40:50
    tether dataset split DATASET --out TRAIN VAL --fractions 0.9 0.1 [--seed 0]
    tether dataset split DATASET --out DIR --by-task      DIR/<task> per task
    tether dataset stats DATASET [--recompute] [--json]   meta/stats.json per feature
    tether dataset replay DATASET --robot ADDRESS --episode N [--task T] [--seed S]
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Union

import numpy as np
import tyro

from tether.launch import UsageError
from tether.robot.dataset import Dataset, DatasetError
from tether.robot.dataset import edit
from tether.robot.dataset.check import check_dataset, require_intact

DatasetPath = Annotated[Path, tyro.conf.arg(metavar="DATASET")]


@dataclass
class Info:
    """What a dataset holds: episodes, frames, fps, features and tasks."""

    dataset: tyro.conf.Positional[DatasetPath]
    json: bool = False
    """Print JSON instead of text."""


@dataclass
class Check:
    """Verify every file (info.json's fields, the episode table against the data, each parquet
    file's rows and columns, each video decoded to its expected frame count, the statistics); one
    line per problem and exit code 1 when there is any, 0 when there is none."""

    dataset: tyro.conf.Positional[DatasetPath]
    quick: bool = False
    """Read parquet footers and video packets only (no decoding): fast, misses damage inside files."""
    json: bool = False
    """Print the report as JSON (problems, notes, counts)."""


@dataclass
class View:
    """Per episode, an MP4 of the cameras side by side and a PNG of state and action curves; or,
    with --rerun, every episode in a Rerun viewer on one timeline (cameras, each joint's state and
    action, episode boundaries, success and reward columns)."""

    dataset: tyro.conf.Positional[DatasetPath]
    episodes: tuple[int, ...] = ()
    """Episodes to render; default: all."""
    out: Path | None = None
    """Output folder; default: DATASET_view next to the dataset."""
    rerun: bool = False
    """Show the dataset in a Rerun viewer spawned here (needs a display; pip install 'tether[rerun]')."""
    episode: int | None = None
    """With --rerun: this episode only (as --episodes N)."""
    save: Path | None = None
    """Write a Rerun recording (FILE.rrd, open it with `rerun FILE.rrd`) instead of spawning a
    viewer; implies --rerun."""
    jpeg_quality: int = 90
    """With --rerun: camera frames JPEG-encoded at this quality (1-100), or 0 for raw pixels."""


@dataclass
class Merge:
    """Merge datasets recorded with the same robot spec and fps into a new one (videos re-encoded)."""

    sources: tyro.conf.Positional[Annotated[tuple[Path, ...], tyro.conf.arg(metavar="DATASET ...")]]
    """The datasets to merge, in order."""
    out: Path
    """The merged dataset's folder."""
    overwrite: bool = False
    """Replace a dataset already at --out."""


@dataclass
class Split:
    """Split a dataset into new ones, by episode ranges, shuffled fractions or task."""

    dataset: tyro.conf.Positional[DatasetPath]
    out: tuple[Path, ...]
    """One folder per part (with --by-task: one parent folder, parts named by task)."""
    episodes: tuple[str, ...] = ()
    """One selection per part, Python-slice style: 0:40 40: or 0:10,20:30."""
    fractions: tuple[float, ...] = ()
    """One fraction per part of the shuffled episodes, e.g. 0.9 0.1."""
    seed: int = 0
    """Shuffle seed for --fractions."""
    by_task: bool = False
    """One part per task."""
    overwrite: bool = False
    """Replace datasets already at the outputs."""


@dataclass
class Stats:
    """Per-feature statistics from meta/stats.json."""

    dataset: tyro.conf.Positional[DatasetPath]
    recompute: bool = False
    """Recompute every episode's statistics and meta/stats.json from the data and videos first."""
    json: bool = False
    """Print JSON instead of a table."""


@dataclass
class Replay:
    """Send an episode's recorded actions to a robot server, one per control tick."""

    dataset: tyro.conf.Positional[DatasetPath]
    robot: str = "tcp://127.0.0.1:5555"
    """Address of a running robot server (tether serve)."""
    episode: int = 0
    """Episode to replay."""
    task: str | None = None
    """Task to reset the robot to; default: the episode's task."""
    seed: int | None = None
    """Reset seed; a sim starts where the recording did only with its seed (not stored in the
    dataset; tether collect uses seed + k for a task's episode k)."""
    client_key: Path | None = None
    """This client's secret key (.key_secret), for a server with CurveZMQ keys."""
    server_public_key: Path | None = None
    """The server's public key (.key), with --client-key."""
    json: bool = False
    """Print the result as JSON."""


DatasetVerb = Union[
    Annotated[Info, tyro.conf.subcommand("info")],
    Annotated[Check, tyro.conf.subcommand("check")],
    Annotated[View, tyro.conf.subcommand("view")],
    Annotated[Merge, tyro.conf.subcommand("merge")],
    Annotated[Split, tyro.conf.subcommand("split")],
    Annotated[Stats, tyro.conf.subcommand("stats")],
    Annotated[Replay, tyro.conf.subcommand("replay")],
]


@dataclass
class DatasetCommand:
    """Inspect, check, view, merge, split and replay datasets (LeRobotDataset v3.0 layout)."""

    verb: tyro.conf.OmitArgPrefixes[tyro.conf.OmitSubcommandPrefixes[DatasetVerb]]


# ------------------------------------------------------------------------------------------ info
def info(root: Path) -> dict:
    """Summary of the dataset at ``root``: episodes, frames, fps, features, tasks, lengths.

    Raises:
        tether.robot.dataset.DatasetError: not a readable dataset, or one that a quick
            ``check_dataset`` finds damaged (the message gives the first problem).
    """
    require_intact(root)
    ds = Dataset(root)
    lengths = [e["length"] for e in ds.episodes]
    return {
        "root": str(root),
        "codebase_version": ds.info["codebase_version"],
        "robot_type": ds.info.get("robot_type"),
        "episodes": len(ds),
        "frames": ds.num_frames,
        "fps": ds.fps,
        "features": {k: {"dtype": f["dtype"], "shape": f["shape"]} for k, f in ds.features.items()},
        "tasks": ds.tasks,
        "episodes_per_task": {t: sum(t in e["tasks"] for e in ds.episodes) for t in ds.tasks},
        "episode_length": {"min": min(lengths, default=0), "max": max(lengths, default=0),
                           "mean": sum(lengths) / max(1, len(lengths))},
    }


def _print_info(cmd: Info) -> None:
    summary = info(cmd.dataset)
    if cmd.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{summary['root']}: {summary['episodes']} episodes, {summary['frames']} frames at "
          f"{summary['fps']:g} fps, robot {summary['robot_type']}")
    for task, n in summary["episodes_per_task"].items():
        print(f"  task {task!r}: {n} episodes")
    for key, f in summary["features"].items():
        print(f"  {key}: {f['dtype']} {f['shape']}")


# ----------------------------------------------------------------------------------------- check
def _print_check(cmd: Check) -> None:
    report = check_dataset(cmd.dataset, decode=not cmd.quick)
    if cmd.json:
        print(json.dumps({"root": str(report.root), "ok": report.ok, "problems": report.problems,
                          "notes": report.notes, "episodes": report.episodes, "frames": report.frames,
                          "files": report.files, "decoded": report.decoded}, indent=2))
    else:
        print(report.summary())
        for line in report.problems:
            print(f"  problem: {line}")
        for line in report.notes:
            print(f"  note: {line}")
    if not report.ok:
        raise SystemExit(1)


# ------------------------------------------------------------------------------------------ view
def _element_names(feature: dict, key: str, width: int) -> list[str]:
    """Names of a vector feature's elements (LeRobot stores a list, or a dict of one list)."""
    names = feature.get("names")
    if isinstance(names, dict) and len(names) == 1:
        names = next(iter(names.values()))
    if isinstance(names, list) and len(names) == width and all(isinstance(n, str) for n in names):
        return names
    return [f"{key}[{j}]" for j in range(width)]


def _unit(ds: Dataset, key: str) -> str:
    """The unit of a feature from the dataset's tether spec ("" when unknown)."""
    if ds.spec is None:
        return ""
    feature = ds.spec.action if key == "action" else ds.spec.observation.get(key)
    return feature.unit if feature is not None else ""


def _side_by_side(videos: list[np.ndarray]) -> np.ndarray:
    """Camera videos [N, H_i, W_i, 3] -> one video [N, max H, sum W, 3] (shorter ones padded black)."""
    height = max(v.shape[1] for v in videos)
    padded = [np.pad(v, ((0, 0), (0, height - v.shape[1]), (0, 0), (0, 0))) for v in videos]
    return np.concatenate(padded, axis=2)


def plot_episode(ds: Dataset, index: int, path: Path) -> Path | None:
    """Write a PNG of episode ``index``'s vector features (``observation.*`` and ``action``)
    against time (s): one panel per feature, one line per named element, y labelled with the
    spec's unit. Returns ``path``, or None when the dataset has no vector feature to plot."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a robot computer or in CI
    import matplotlib.pyplot as plt

    curves = [k for k, f in ds.features.items()
              if (k == "action" or k.startswith("observation.")) and f["dtype"] not in ("video", "image")
              and len(f["shape"]) == 1]
    if not curves:
        return None
    n = ds.episodes[index]["length"]
    data = ds.episode(index, [*curves, "timestamp", "episode_index"])
    t = data["timestamp"].reshape(n)
    fig, axes = plt.subplots(len(curves), 1, figsize=(9, 2.6 * len(curves)), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], curves):
        values = data[key].reshape(n, -1)
        for j, name in enumerate(_element_names(ds.features[key], key, values.shape[1])):
            ax.plot(t, values[:, j], label=name)
        ax.set_title(key)
        ax.set_ylabel(_unit(ds, key))
        ax.grid(alpha=0.3)
        if values.shape[1] <= 12:  # a legend of dozens of joints hides the curves
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(f"{ds.root.name} episode {index}: {ds.episodes[index]['tasks'][0]}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@contextlib.contextmanager
def _counting_progress(label: str, disable: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A progress bar named ``label``; yields the (done, total) callback that advances it."""
    from tether.launch.progress import progress_bar

    with progress_bar(disable=disable) as progress:
        bar = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(bar, completed=done, total=total)


def view(root: Path, out: Path, episodes: tuple[int, ...] = (),
         on_episode: edit.OnEpisode | None = None) -> list[Path]:
    """Render episodes of the dataset at ``root`` into ``out`` (``on_episode``: progress
    callback, (episodes rendered, total), after each).

    Per episode ``i``: ``episode_{i:03d}.png`` (``plot_episode``: the ``observation.state`` and
    ``action`` curves against time in s) and ``episode_{i:03d}.mp4`` at the dataset's fps, its
    cameras side by side, [H = max height, W = sum of widths] (only when it has cameras).

    Returns:
        The files written.

    Raises:
        DatasetError: not a readable dataset, or damaged (a quick ``check_dataset``);
        DatasetEditError: an episode index out of range.
    """
    from tether.robot.video import write_mp4

    require_intact(root)
    ds = Dataset(root)
    selected = list(episodes) if episodes else list(range(len(ds)))
    for i in selected:
        edit.check_episode_index(ds, i)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for done, i in enumerate(selected, 1):
        png = plot_episode(ds, i, out / f"episode_{i:03d}.png")
        if png is not None:
            written.append(png)
        if ds.video_keys:
            n = ds.episodes[i]["length"]
            videos = []
            for key in ds.video_keys:
                h, w = ds.features[key]["shape"][:2]
                videos.append(ds.video(key, i)[:n, :h, :w])  # crop the encoder's even-size padding
            written.append(write_mp4(out / f"episode_{i:03d}.mp4", _side_by_side(videos), ds.fps))
        if on_episode is not None:
            on_episode(done, len(selected))
    return written


def view_rerun(cmd: View):
    """``tether dataset view --rerun``: log the chosen episodes (default: all) with
    ``tether.launch.rerun_view.log_dataset`` to a spawned viewer or to ``cmd.save``.

    Returns:
        ``rerun_view.DatasetViewStats`` (episodes, frames, series, images logged).

    Raises:
        UsageError: --out or both --episode and --episodes given, a bad --jpeg-quality, rerun-sdk
            missing, or no display without --save.
        DatasetError: not a readable dataset, or damaged (a quick ``check_dataset``);
        DatasetEditError: an episode index out of range.
    """
    from tether.launch import rerun_view

    if cmd.out is not None:
        raise UsageError("--out is the folder of the MP4/PNG view; a Rerun view writes --save FILE.rrd")
    if cmd.episode is not None and cmd.episodes:
        raise UsageError("give --episode N or --episodes A B ..., not both")
    if not 0 <= cmd.jpeg_quality <= 100:
        raise UsageError(f"--jpeg-quality must be 0 (raw pixels) to 100, not {cmd.jpeg_quality}")
    require_intact(cmd.dataset)
    ds = Dataset(cmd.dataset)
    selected = [cmd.episode] if cmd.episode is not None else list(cmd.episodes) or list(range(len(ds)))
    for i in selected:
        edit.check_episode_index(ds, i)
    rec = rerun_view.open_recording("dataset", cmd.save)
    try:
        return rerun_view.log_dataset(rec, ds, selected, cmd.jpeg_quality)
    finally:
        rec.disconnect()  # an .rrd file is complete only once its stream is closed


# ----------------------------------------------------------------------------------------- split
def _slug(task: str) -> str:
    """A folder name for a task string."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", task).strip("_") or "task"


def _split(cmd: Split) -> list[Dataset]:
    modes = [bool(cmd.episodes), bool(cmd.fractions), cmd.by_task]
    if sum(modes) != 1:
        raise UsageError("split needs exactly one of --episodes, --fractions, --by-task")
    require_intact(cmd.dataset)
    ds = Dataset(cmd.dataset)
    if cmd.by_task:
        if len(cmd.out) != 1:
            raise UsageError("--by-task takes one --out folder (parts go under it by task)")
        parts = edit.task_split(ds)
        outs = [cmd.out[0] / _slug(task) for task in parts]
        selections = list(parts.values())
    else:
        if cmd.episodes:
            selections = [edit.parse_episodes(s, len(ds)) for s in cmd.episodes]
        else:
            selections = edit.fraction_split(len(ds), cmd.fractions, cmd.seed)
        outs = list(cmd.out)
    with _counting_progress("split") as on_episode:
        return edit.split(cmd.dataset, outs, selections, overwrite=cmd.overwrite, on_episode=on_episode)


# ----------------------------------------------------------------------------------------- stats
def _print_stats(cmd: Stats) -> None:
    # --recompute rewrites meta/stats.json: it may be what is broken
    require_intact(cmd.dataset, ignore_stats=cmd.recompute)
    if cmd.recompute:
        edit.recompute_stats(cmd.dataset)
    stats = edit.load_stats(cmd.dataset)
    if cmd.json:
        print(json.dumps({k: {s: v.tolist() for s, v in d.items()} for k, d in stats.items()}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    ds = Dataset(cmd.dataset)
    table = Table(title=f"{ds.root}: {ds.num_frames} frames, {len(ds)} episodes")
    for column in ("feature", "element", "mean", "std", "min", "max", "count"):
        table.add_column(column, justify="left" if column in ("feature", "element") else "right",
                         no_wrap=True)
    for key, s in stats.items():
        mean = s["mean"].reshape(-1)
        is_image = ds.features.get(key, {}).get("dtype") in ("video", "image")
        names = (["R", "G", "B"][: len(mean)] if is_image and len(mean) <= 3
                 else _element_names(ds.features.get(key, {}), key, len(mean)))
        for j, name in enumerate(names):
            table.add_row(key if j == 0 else "", name if len(mean) > 1 else "",
                          *(f"{s[stat].reshape(-1)[j]:.4g}" for stat in ("mean", "std", "min", "max")),
                          str(int(s["count"].reshape(-1)[0])) if j == 0 else "")
    Console().print(table)


# ---------------------------------------------------------------------------------------- replay
def replay(
    root: Path,
    robot: str,
    episode: int,
    task: str | None = None,
    seed: int | None = None,
    keys=None,
    on_step: Callable[[int, int], None] | None = None,
) -> dict:
    """Replay episode ``episode`` of the dataset at ``root`` on the robot server at ``robot``.

    Connects as a controller with the dataset's spec (the server and this side both check it,
    plus that the robot knows the task), resets to ``task`` (default: the episode's) with
    ``seed``, then answers each state of the episode with the next recorded action, so actions go
    out at the robot's control rate, until the actions run out or the robot ends the episode.

    Args:
        keys: ``tether.robot.security.ClientKeys`` for a server with CurveZMQ keys.
        on_step: called with (actions sent, episode length) after each action.

    Returns:
        ``episode``, ``task``, ``length`` (recorded frames), ``steps`` (actions sent),
        ``success`` (the robot's flag on the last state), ``recorded_success``,
        ``max_state_deviation`` (max |replayed - recorded| of ``observation.state`` over the
        steps both have, in the state's units; near 0 for a deterministic sim reset with the
        recording's seed; None without ``observation.state``) and ``late_ticks`` (ticks where
        the robot held because an action arrived after its tick: the replay is then not exact).

    Raises:
        DatasetError: not a readable dataset, damaged (a quick ``check_dataset``), no tether
            spec, or fps != the spec's control rate.
        DatasetEditError: ``episode`` out of range.
        SpecMismatchError, RobotLinkError: the robot does not fit the dataset or does not answer.
    """
    from tether.robot.client import RobotClient

    require_intact(root)
    ds = Dataset(root)
    edit.check_episode_index(ds, episode)
    if ds.spec is None:
        raise DatasetError(f"{ds.root} has no tether robot spec: it cannot be checked against a robot")
    if not np.isclose(ds.fps, ds.spec.control_rate_hz):
        raise DatasetError(
            f"{ds.root} was recorded at {ds.fps:g} fps but the robot runs at "
            f"{ds.spec.control_rate_hz:g} Hz: one action per tick would replay it at the wrong speed"
        )
    row = ds.episodes[episode]
    task = task or row["tasks"][0]
    columns = ["action", "next.success", "episode_index"]
    has_state = "observation.state" in ds.features
    data = ds.episode(episode, columns + ["observation.state"] * has_state)
    actions = data["action"].reshape(row["length"], -1)
    recorded_success = bool(data["next.success"].reshape(-1)[-1]) if "next.success" in data else None
    replayed: list[np.ndarray] = []
    late = 0
    with RobotClient(robot, spec=ds.spec, name="dataset-replay", keys=keys) as client:
        client.spec.check_policy(ds.spec, tasks=(task,))
        state = client.reset(task, seed)
        sent = 0
        for action in actions:
            if has_state:
                replayed.append(np.asarray(state["observation"]["observation.state"]))
            if state["done"]:
                break
            client.send_action(action, ref_seq=state["seq"])
            sent += 1
            previous = state
            state = client.next_state()
            while state["episode"] == previous["episode"] and state["step"] == previous["step"]:
                state = client.next_state()  # not a tick of this episode (cannot happen mid-run)
            if state["timing"]["command_age_s"] is None:
                late += 1  # the robot held for this tick: our action came too late
            if on_step is not None:
                on_step(sent, len(actions))
    deviation = None
    if has_state and replayed:
        recorded = data["observation.state"].reshape(row["length"], -1)[: len(replayed)]
        deviation = float(np.abs(np.stack(replayed) - recorded).max())
    return {
        "episode": episode,
        "task": task,
        "length": int(row["length"]),
        "steps": sent,
        "success": bool(state["success"]),
        "recorded_success": recorded_success,
        "max_state_deviation": deviation,
        "late_ticks": late,
    }


def _replay(cmd: Replay) -> None:
    keys = None
    if cmd.client_key is not None:
        from tether.robot.security import ClientKeys

        if cmd.server_public_key is None:
            raise UsageError("--client-key needs --server-public-key")
        keys = ClientKeys(cmd.client_key, cmd.server_public_key)
    with _counting_progress(f"replay episode {cmd.episode}", disable=cmd.json) as on_action:
        result = replay(cmd.dataset, cmd.robot, cmd.episode, cmd.task, cmd.seed, keys, on_action)
    if cmd.json:
        print(json.dumps(result, indent=2))
        return
    deviation = result["max_state_deviation"]
    print(f"replayed episode {result['episode']} ({result['task']!r}): {result['steps']}/"
          f"{result['length']} actions, success {result['success']} (recorded "
          f"{result['recorded_success']}), max observation.state deviation "
          f"{'n/a' if deviation is None else f'{deviation:.3g}'}, late ticks {result['late_ticks']}")


# ------------------------------------------------------------------------------------------ main
def main(cmd: DatasetCommand) -> None:
    """Entry point of ``tether dataset``: dispatch to info, check, view, merge, split, stats or replay.

    Raises:
        SystemExit(1): ``check`` found problems (each printed on its own line).
    """
    verb = cmd.verb
    if isinstance(verb, Info):
        _print_info(verb)
    elif isinstance(verb, Check):
        _print_check(verb)
    elif isinstance(verb, View) and (verb.rerun or verb.save is not None):
        stats = view_rerun(verb)
        where = f"wrote {verb.save}" if verb.save is not None else "sent to the Rerun viewer"
        print(f"{where}: {stats.episodes} episodes, {stats.frames} frames, {stats.series} series, "
              f"{stats.images} camera images")
    elif isinstance(verb, View):
        if verb.episode is not None:
            raise UsageError("--episode goes with --rerun; the MP4/PNG view takes --episodes")
        out = verb.out or verb.dataset.with_name(verb.dataset.name + "_view")
        with _counting_progress("render") as on_episode:
            written = view(verb.dataset, out, verb.episodes, on_episode)
        print(f"wrote {len(written)} files to {out}")
    elif isinstance(verb, Merge):
        for source in verb.sources:
            require_intact(source)
        with _counting_progress("merge") as on_episode:
            merged = edit.merge(verb.sources, verb.out, overwrite=verb.overwrite, on_episode=on_episode)
        print(f"merged {len(verb.sources)} datasets into {verb.out}: {len(merged)} episodes, "
              f"{merged.num_frames} frames, {len(merged.tasks)} tasks")
    elif isinstance(verb, Split):
        for part in _split(verb):
            print(f"{part.root}: {len(part)} episodes, {part.num_frames} frames")
    elif isinstance(verb, Stats):
        _print_stats(verb)
    elif isinstance(verb, Replay):
        _replay(verb)
