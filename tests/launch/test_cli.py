"""The command line: verbs, one-line errors for bad input, and the torch-free deployment path."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def tether(*args, env=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "tether.launch.cli", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


def test_help_lists_every_verb_with_one_line():
    out = tether("--help").stdout
    for verb in ("demo", "serve", "collect", "train", "export", "eval", "keys", "bench"):
        assert f"• {verb}" in out


def test_unknown_task_is_a_one_line_error(tmp_path):
    proc = tether("demo", "--out", str(tmp_path / "run"), "--tasks", "reach-v3", "drawer-opn-v3")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "tether: error: unknown MetaWorld task 'drawer-opn-v3'; did you mean drawer-open-v3"
    )
    assert not (tmp_path / "run").exists()


def test_output_folder_with_an_older_run_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "report.json").write_text("{}")
    proc = tether("demo", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds an earlier run: pass --overwrite" in lines[0]
    assert (tmp_path / "run" / "report.json").read_text() == "{}"  # nothing was touched


def test_missing_render_backend_is_a_one_line_error(tmp_path):
    proc = tether("demo", "--out", str(tmp_path / "run"), env={"MUJOCO_GL": "not-a-backend"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("tether: error: MuJoCo could not render headless with MUJOCO_GL='not-a-backend'")
    assert "set MUJOCO_GL=egl" in lines[0]


def test_deployment_path_imports_no_torch():
    code = (
        "import sys\n"
        "import tether.robot.server, tether.robot.client, tether.robot.runner, tether.robot.recorder\n"
        "import tether.robot.dataset, tether.robot.drivers.pointmass, tether.launch.cli\n"
        "import tether.launch.eval, tether.launch.serve\n"
        "import tether.robot.actor, tether.robot.learner_link, tether.launch.finetune\n"
        "import tether.perception.success_rewards, tether.robot.teleop.intervention\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_every_subpackage_is_in_pyproject():
    """A folder with an __init__.py that pyproject does not list would be missing from wheels."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    for prefix, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            name = ".".join([prefix, *rel.parts])
            assert name in listed, f"{name} ({init.parent}) is not in pyproject's packages"


@pytest.mark.parametrize("verb", ["serve", "collect", "train", "export", "eval"])
def test_verb_help(verb):
    proc = tether(verb, "--help")
    assert proc.returncode == 0 and "usage: tether " + verb in proc.stdout


def test_collect_quality_mix_is_seeded_and_checked():
    from tether.launch import UsageError
    from tether.launch.collect import CollectConfig, episode_qualities, noisy

    cfg = CollectConfig(dataset=None, episodes=200, quality="mix", mix=(0.2, 0.5, 0.3), seed=3)
    first = episode_qualities(cfg, 0)
    assert first == episode_qualities(cfg, 0) and first != episode_qualities(cfg, 1)
    counts = {q: first.count(q) for q in ("expert", "medium", "random")}
    assert 20 <= counts["expert"] <= 60 and 70 <= counts["medium"] <= 130 and 35 <= counts["random"] <= 85
    with pytest.raises(UsageError, match="--mix"):
        episode_qualities(CollectConfig(dataset=None, quality="mix", mix=(0.0, 0.0, 0.0)), 0)
    expert = lambda s: np.full(4, 0.9, np.float32)  # noqa: E731
    rng = np.random.default_rng(0)
    medium = np.stack([noisy(expert, "medium", cfg, rng)(None) for _ in range(500)])
    assert medium.max() <= 1 and 0.3 < medium.std() < 0.6  # clipped noise around the expert
    random = np.stack([noisy(expert, "random", cfg, rng)(None) for _ in range(500)])
    assert abs(random.mean()) < 0.1 and random.min() >= -1
    assert noisy(expert, "expert", cfg, rng) is expert  # no noise asked: the expert itself


def test_play_quality_reaches_random_points_in_turn():
    from tether.launch.collect import PLAY_HIGH, PLAY_LOW, CollectConfig, episode_qualities, play_policy

    cfg = CollectConfig(dataset=None, episodes=400, quality="mix", mix=(0.1, 0.2, 0.3, 0.4), seed=0)
    assert 120 <= episode_qualities(cfg, 0).count("play") <= 200
    act = play_policy(np.random.default_rng(0))
    hand, targets = np.array([0.0, 0.6, 0.2]), set()
    for _ in range(400):  # a hand that moves 1 cm per unit of action, as MetaWorld's does
        a = act(np.concatenate([hand, np.zeros(35)]))
        assert a.shape == (4,) and np.abs(a).max() <= 1
        targets.add(round(float(a[3]), 6))  # one gripper value per target point
        hand = hand + a[:3] / 100
        assert (hand >= PLAY_LOW - 0.05).all() and (hand <= PLAY_HIGH + 0.05).all()
    assert len(targets) >= 8  # it reached (or gave up on) many points, one after another


def test_sigint_interrupts_tether_started_with_sigint_ignored():
    """A background job of a shell without job control inherits SIGINT ignored, and Python then
    installs no handler; tether's entry point restores it, so Ctrl-C, tether launch's ordered
    stop and the learner's save-on-stop still reach the process (tether serve has its own)."""
    import signal

    code = ("import signal, time\n"
            "from tether.launch.cli import _restore_sigint\n"
            "_restore_sigint()\n"
            "signal.raise_signal(signal.SIGINT)\n"
            "time.sleep(0.5)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr, proc.stderr[-500:]
