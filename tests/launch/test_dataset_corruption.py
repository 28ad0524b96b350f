"""Damaged datasets lose nothing and get one line (issue 26): ``tether dataset check`` names every
problem, ``info`` and ``collect --resume`` refuse a damaged dataset instead of reporting 0
episodes or deleting recorded ones, and every verb reading a dataset answers a broken file with
``tether: error: ...`` (exit 2), never a traceback.

Datasets are written by tether's own writer (``DatasetWriter``; in the slow matrix, by ``tether
collect`` itself) and then damaged on disk as a crash, a full disk or a careless hand would: cut
short, emptied, overwritten with random bytes, deleted, fields changed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tether.launch.cli import main
from tether.robot.dataset import Dataset, DatasetError, DatasetWriter
from tether.robot.dataset.check import check_dataset
from tether.sim.metaworld import metaworld_spec

FIXTURE = Path(__file__).parents[1] / "fixtures" / "lerobot_v30"
TASK = "reach-v3"
SPEC = metaworld_spec((TASK,), ("corner",), 32)  # what tether collect --tasks reach-v3 --image-size 32 records
DATA = "data/chunk-000/file-001.parquet"
VIDEO = "videos/observation.images.corner/chunk-000/file-001.mp4"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"


def reach_dataset(root: Path, episodes: int = 3, length: int = 6) -> Path:
    """A MetaWorld reach-v3 dataset with the spec ``tether collect`` records (camera corner, 32 px),
    written by tether's writer: smooth frames, a drifting state."""
    writer = DatasetWriter(root, SPEC, SPEC.control_rate_hz)
    rng = np.random.default_rng(0)
    for e in range(episodes):
        level = (40 + 30 * np.arange(length) + 5 * e)[:, None, None, None]
        writer.add_episode({
            "observation.state": rng.normal(size=(length, 39)).astype(np.float32),
            "observation.images.corner": np.broadcast_to(level, (length, 32, 32, 3)).astype(np.uint8),
            "action": rng.uniform(-1, 1, (length, 4)).astype(np.float32),
        }, TASK)
    return root


# ------------------------------------------------------------------------------- corruptions
def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random(path: Path) -> None:
    path.write_bytes(np.random.default_rng(1).bytes(max(64, path.stat().st_size)))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _info(change):
    def apply(root: Path) -> None:
        path = root / "meta/info.json"
        info = json.loads(path.read_text())
        change(info)
        path.write_text(json.dumps(info))
    return apply


def _rewrite_data(change):
    def apply(root: Path) -> None:
        path = root / DATA
        pq.write_table(change(pq.read_table(path)), path)
    return apply


def _stats_nan(root: Path) -> None:
    path = root / "meta/stats.json"
    stats = json.loads(path.read_text())
    stats["action"]["mean"][0] = float("nan")
    path.write_text(json.dumps(stats))  # Python's json writes NaN


# name -> (damage, a phrase the first error line must hold)
CORRUPTIONS = {
    "info_truncated": (lambda r: _cut(r / "meta/info.json"), "meta/info.json is not valid JSON"),
    "info_empty": (lambda r: _empty(r / "meta/info.json"), "meta/info.json is empty"),
    "info_random": (lambda r: _random(r / "meta/info.json"), "meta/info.json"),
    "info_fps_abc": (_info(lambda i: i.update(fps="abc")), "fps is 'abc', not a positive number"),
    "info_no_features": (_info(lambda i: i.pop("features")), "features is missing"),
    "info_a_list": (lambda r: (r / "meta/info.json").write_text("[1, 2]"), "not an object"),
    "info_counts_more": (_info(lambda i: i.update(total_episodes=4)), "counts 4"),
    "tasks_deleted": (lambda r: (r / "meta/tasks.parquet").unlink(), "meta/tasks.parquet is missing: it holds"),
    "tasks_truncated": (lambda r: _cut(r / "meta/tasks.parquet"), "meta/tasks.parquet"),
    "episodes_deleted": (lambda r: (r / EPISODES).unlink(), "counts 3 episodes"),
    "episodes_truncated": (lambda r: _cut(r / EPISODES), EPISODES),
    "data_deleted": (lambda r: (r / DATA).unlink(), f"{DATA} is missing: it holds the frames"),
    "data_truncated": (lambda r: _cut(r / DATA), f"{DATA} is not a readable parquet file"),
    "data_random": (lambda r: _random(r / DATA), f"{DATA} is not a readable parquet file"),
    "data_rows_dropped": (_rewrite_data(lambda t: t.slice(0, 3)), f"{DATA} holds 3 rows"),
    "data_column_dropped": (_rewrite_data(lambda t: t.drop_columns(["action"])), "lacks column action"),
    "video_deleted": (lambda r: (r / VIDEO).unlink(), f"{VIDEO} is missing: it holds camera"),
    "video_truncated": (lambda r: _cut(r / VIDEO), f"{VIDEO} cannot be"),
    "video_scrambled": (lambda r: _random(r / VIDEO), f"{VIDEO} cannot be"),
    "video_empty": (lambda r: _empty(r / VIDEO), f"{VIDEO} cannot be"),
    "stats_deleted": (lambda r: (r / "meta/stats.json").unlink(), "meta/stats.json is missing: it holds"),
    "stats_truncated": (lambda r: _cut(r / "meta/stats.json"), "meta/stats.json is not valid JSON"),
    "stats_nan": (_stats_nan, "meta/stats.json holds NaN or inf in action's statistics"),
}


def damaged(source: Path, root: Path, name: str) -> Path:
    """A copy of ``source`` at ``root`` with corruption ``name`` applied."""
    shutil.copytree(source, root)
    CORRUPTIONS[name][0](root)
    return root


def fingerprint(root: Path) -> dict[str, str]:
    """Every file under ``root`` and its SHA-1: nothing may be deleted or changed."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return reach_dataset(tmp_path_factory.mktemp("clean") / "ds")


# ------------------------------------------------------------------------------ the check verb
def test_check_passes_intact_datasets(clean, capsys):
    for root in (clean, FIXTURE):  # tether's own layout, and LeRobot's (episodes packed in files)
        report = check_dataset(root)
        assert report.ok, report.problems
        main(["dataset", "check", str(root)])
        assert capsys.readouterr().out.startswith(f"{root}: ok (3 episodes")
    assert check_dataset(clean).files == 1 + 1 + 1 + 3 + 3 + 1  # info, tasks, episodes, data, videos, stats


@pytest.mark.parametrize("name", ["episodes_deleted", "data_truncated", "video_scrambled", "stats_nan",
                                  "info_fps_abc", "data_rows_dropped"])
def test_check_names_each_problem_on_one_line_and_exits_1(clean, tmp_path, capsys, name):
    root = damaged(clean, tmp_path / "ds", name)
    before = fingerprint(root)
    with pytest.raises(SystemExit) as exit_info:
        main(["dataset", "check", str(root)])
    assert exit_info.value.code == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"{root}: 1 problem")
    problems = [line for line in lines if line.startswith("  problem: ")]
    assert len(problems) == 1 and CORRUPTIONS[name][1] in problems[0], lines
    assert fingerprint(root) == before  # a check only reads


def test_check_lists_several_problems_and_notes_unfinished_files(clean, tmp_path, capsys):
    root = damaged(clean, tmp_path / "ds", "data_deleted")
    (root / VIDEO).unlink()
    (root / "meta/stats.json").unlink()
    # what a recorder killed mid-episode leaves: files of episode 3, which info.json never counted
    shutil.copy(clean / DATA, root / "data/chunk-000/file-003.parquet")
    report = check_dataset(root)
    assert [p.split(" ")[0] for p in report.problems] == [DATA, VIDEO, "meta/stats.json"]
    assert "of episode 1" in report.problems[0]
    assert report.notes == ["data/chunk-000/file-003.parquet is listed by no committed episode (left by "
                            "an unfinished one? collect --resume removes those)"]
    quick = check_dataset(root, decode=False)
    assert quick.problems == report.problems and not quick.decoded
    with pytest.raises(SystemExit):
        main(["dataset", "check", str(root), "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["ok"] is False and len(printed["problems"]) == 3 and printed["episodes"] == 3


# -------------------------------------------------------------------- info and resume lose nothing
def test_missing_episode_table_info_refuses_and_resume_deletes_nothing(clean, tmp_path, cli_error):
    """The issue's case: meta/episodes gone, info.json counting 3. info must not say 0 episodes,
    and resume must not delete the 3 episodes' data and videos as 'never completed'."""
    root = damaged(clean, tmp_path / "ds", "episodes_deleted")
    before = fingerprint(root)
    err = cli_error("dataset", "info", root)
    assert "meta/episodes/chunk-000/file-000.parquet is missing but meta/info.json counts 3 episodes" in err
    with pytest.raises(DatasetError, match="counts 3 episodes"):
        Dataset(root)  # the reader refuses too: never 0 episodes
    with pytest.raises(DatasetError, match="will not resume"):
        DatasetWriter(root, SPEC, SPEC.control_rate_hz, resume=True)
    err = cli_error("collect", root, "--resume", "--tasks", TASK, "--episodes", "1", "--image-size", "32")
    assert err.startswith(f"tether: error: will not resume {root}: {EPISODES} is missing")
    assert "restore" in err or "tether dataset check" in err  # a repair hint
    assert fingerprint(root) == before
    assert not (tmp_path / "logs").exists()  # refused before a robot server was started


def test_resume_with_other_tasks_is_a_one_line_error(clean, tmp_path, cli_error):
    root = damaged(clean, tmp_path / "ds", "stats_nan")
    shutil.copy(clean / "meta/stats.json", root / "meta/stats.json")  # intact again
    before = fingerprint(root)
    err = cli_error("collect", root, "--resume", "--tasks", TASK, "push-v3", "--episodes", "1",
                    "--image-size", "32")
    assert "was recorded with another robot spec" in err
    assert "spec.tasks: ['reach-v3'] vs ['reach-v3', 'push-v3']" in err
    assert "resume it with the settings it was recorded with" in err
    err = cli_error("collect", root, "--resume", "--tasks", TASK, "--episodes", "1", "--image-size", "64")
    assert "observation.images.corner" in err and "[32, 32, 3]" in err
    assert fingerprint(root) == before


def test_resume_removes_only_what_is_provably_unfinished(clean, tmp_path):
    """Files of an episode number past info.json's count, and .tmp files, are an unfinished
    episode's; a stray file of another name is left alone."""
    root = damaged(clean, tmp_path / "ds", "stats_nan")
    shutil.copy(clean / "meta/stats.json", root / "meta/stats.json")
    unfinished = [root / "data/chunk-000/file-003.parquet", root / "videos/observation.images.corner/chunk-000/file-003.mp4.tmp"]
    for path in unfinished:
        shutil.copy(clean / DATA, path)
    stray = root / "data/chunk-000/notes.txt"
    stray.write_text("mine")
    kept = {k: v for k, v in fingerprint(root).items() if "file-003" not in k}
    writer = DatasetWriter(root, SPEC, SPEC.control_rate_hz, resume=True)
    assert len(writer.episodes) == 3 and not any(p.exists() for p in unfinished)
    assert fingerprint(root) == kept and stray.read_text() == "mine"


@pytest.mark.parametrize("name", ["info_truncated", "info_empty", "info_random", "info_fps_abc",
                                  "info_no_features", "data_truncated", "video_scrambled", "tasks_deleted",
                                  "data_deleted", "video_deleted"])
def test_damage_is_a_one_line_error_in_info(clean, tmp_path, cli_error, name):
    root = damaged(clean, tmp_path / "ds", name)
    err = cli_error("dataset", "info", root)
    assert CORRUPTIONS[name][1] in err, err
    if name.endswith("_deleted"):  # what is missing, and why it is needed
        assert "is missing: it holds" in err


def test_reader_errors_name_the_file_and_its_role(clean, tmp_path):
    """Without the check in front (a library caller), the reader's own errors are DatasetErrors."""
    root = damaged(clean, tmp_path / "ds", "data_truncated")
    ds = Dataset(root)
    with pytest.raises(DatasetError, match=f"{DATA} cannot be read .*frames .* of episode 1"):
        ds.episode(1)
    root = damaged(clean, tmp_path / "ds2", "video_scrambled")
    with pytest.raises(DatasetError, match=f"{VIDEO} cannot be decoded .*camera observation.images.corner"):
        Dataset(root).video("observation.images.corner", 1)
    root = damaged(clean, tmp_path / "ds3", "video_deleted")
    with pytest.raises(DatasetError, match=f"{VIDEO} is missing: it holds camera"):
        Dataset(root).video("observation.images.corner", 1)


def test_stats_recompute_repairs_a_broken_stats_file(clean, tmp_path, cli_error, capsys):
    root = damaged(clean, tmp_path / "ds", "stats_truncated")
    assert "meta/stats.json is not valid JSON" in cli_error("dataset", "stats", root)
    main(["dataset", "stats", str(root), "--recompute", "--json"])
    assert json.loads(capsys.readouterr().out)["action"]["count"] == [18]
    assert check_dataset(root).ok


# ------------------------------------------------------------------------- the slow matrix
VERBS = {
    "info": lambda root, out: ["dataset", "info", root],
    "stats": lambda root, out: ["dataset", "stats", root],
    "view": lambda root, out: ["dataset", "view", root, "--out", out / "view"],
    "train": lambda root, out: ["train", root, "--algo", "bc", "--optim.steps", "2", "--out", out / "train"],
    "collect_resume": lambda root, out: ["collect", root, "--resume", "--tasks", TASK, "--episodes", "1",
                                         "--image-size", "32", "--max-episode-steps", "20"],
}


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> Path:
    """3 episodes recorded by ``tether collect`` itself (robot server, recorder, MetaWorld)."""
    import subprocess

    root = tmp_path_factory.mktemp("collected") / "ds"
    subprocess.run([sys.executable, "-m", "tether.launch.cli", "collect", str(root), "--tasks", TASK,
                    "--episodes", "3", "--image-size", "32", "--max-episode-steps", "20"],
                   check=True, capture_output=True, timeout=300)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_matrix(collected, tmp_path, capsys, name):
    """Every corruption x info/stats/view/train/collect --resume: exit code 2 with one line
    ``tether: error: ...`` (no traceback, no silent exit 0), naming the damaged file, and every
    file of the dataset as it was (no episode lost)."""
    root = damaged(collected, tmp_path / "ds", name)
    before = fingerprint(root)
    for verb, args in VERBS.items():
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in args(root, tmp_path)])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2, (verb, err)
        assert err.startswith("tether: error: ") and "\n" not in err, (verb, err)
        assert CORRUPTIONS[name][1] in err, (verb, err)
        assert fingerprint(root) == before, verb
    assert not (tmp_path / "view").exists() or not any((tmp_path / "view").iterdir())
    with pytest.raises(SystemExit) as exit_info:  # and the full check names it, exit code 1
        main(["dataset", "check", str(root)])
    assert exit_info.value.code == 1
    assert CORRUPTIONS[name][1] in capsys.readouterr().out


@pytest.mark.slow
def test_matrix_verbs_work_on_the_intact_dataset(collected, tmp_path, capsys):
    """The matrix's baseline: the same commands succeed on the dataset before it is damaged."""
    root = tmp_path / "ds"
    shutil.copytree(collected, root)
    for verb, args in VERBS.items():
        main([str(a) for a in args(root, tmp_path)])
    assert len(Dataset(root)) == 4  # the resumed collection added its episode
