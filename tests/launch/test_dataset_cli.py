"""``tether dataset info|view|merge|split|stats|replay`` through the command line's entry point."""

import json
from pathlib import Path

import av
import matplotlib.image
import numpy as np

from tether.launch.cli import main
from tether.robot.dataset import Dataset, DatasetWriter
from tether.robot.drivers.pointmass import TASK, PointMassRobot
from tether.robot.spec import Feature, RobotSpec

FIXTURE = Path(__file__).parents[1] / "fixtures" / "lerobot_v30"
SPEC = RobotSpec(
    "toy", 10.0,
    {"observation.state": Feature("float32", (3,), ("a", "b", "c")),
     "observation.images.front": Feature("uint8", (16, 24, 3), unit="pixel"),
     "observation.images.wrist": Feature("uint8", (12, 16, 3), unit="pixel")},
    Feature("float32", (2,), ("x", "y"), low=(-1, -1), high=(1, 1)),
)


def toy_dataset(root, tasks=("pick", "place", "pick", "place")):
    writer = DatasetWriter(root, SPEC, fps=10)
    for i, task in enumerate(tasks):
        rng = np.random.default_rng(i)
        n = 4 + i
        level = (30 + 20 * np.arange(n))[:, None, None, None]
        writer.add_episode({
            "observation.state": rng.normal(size=(n, 3)).astype(np.float32),
            "observation.images.front": np.broadcast_to(level, (n, 16, 24, 3)).astype(np.uint8),
            "observation.images.wrist": np.broadcast_to(level + 10, (n, 12, 16, 3)).astype(np.uint8),
            "action": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        }, task)
    return root


def run(capsys, *args) -> str:
    main(["dataset", *map(str, args)])
    return capsys.readouterr().out



def test_info_json(tmp_path, capsys):
    root = toy_dataset(tmp_path / "ds")
    summary = json.loads(run(capsys, "info", root, "--json"))
    assert summary["episodes"] == 4 and summary["frames"] == 4 + 5 + 6 + 7 and summary["fps"] == 10
    assert summary["tasks"] == ["pick", "place"]
    assert summary["features"]["observation.images.front"] == {"dtype": "video", "shape": [16, 24, 3]}
    assert "4 episodes, 22 frames at 10 fps" in run(capsys, "info", root)


def test_missing_dataset_and_bad_episode_are_one_line_errors(tmp_path, capsys, cli_error):
    err = cli_error("dataset", "info", tmp_path / "nope")
    assert err == f"tether: error: {tmp_path / 'nope'} is not a dataset: meta/info.json is missing"
    root = toy_dataset(tmp_path / "ds", tasks=("pick",))
    err = cli_error("dataset", "view", root, "--episodes", "3")
    assert err == f"tether: error: episode 3 is out of range: {root} has 1 episodes (0-0)"
    assert "--episodes, --fractions, --by-task" in cli_error("dataset", "split", root, "--out", tmp_path / "x")


def test_view_writes_a_video_and_curves_per_episode(tmp_path, capsys):
    root = toy_dataset(tmp_path / "ds")
    out = tmp_path / "view"
    run(capsys, "view", root, "--episodes", "0", "3", "--out", out)
    assert sorted(p.name for p in out.iterdir()) == [
        "episode_000.mp4", "episode_000.png", "episode_003.mp4", "episode_003.png"]
    with av.open(str(out / "episode_003.mp4")) as video:
        frames = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
    assert len(frames) == 7 and frames[0].shape == (16, 24 + 16, 3)  # the cameras side by side
    # the wrist camera is 4 px shorter: padded black below it, its own image above
    assert frames[0][14:, 30:].mean() < 20 and abs(frames[0][:10, 30:].mean() - 40) < 8
    image = matplotlib.image.imread(out / "episode_000.png")
    assert image.ndim == 3 and image.shape[0] > 300  # two panels: state and action
    printed = run(capsys, "view", root)  # every episode, next to the dataset by default
    assert len(list((tmp_path / "ds_view").glob("episode_*.png"))) == 4
    assert "render" in printed and "100%" in printed  # the progress line, in a log too


def test_view_of_a_lerobot_dataset(tmp_path, capsys):
    """No tether spec, episodes packed in one video: curves named from info.json, frames cut out."""
    run(capsys, "view", FIXTURE, "--episodes", "2", "--out", tmp_path / "view")
    with av.open(str(tmp_path / "view/episode_002.mp4")) as video:
        assert len(list(video.decode(video=0))) == 8
    assert (tmp_path / "view/episode_002.png").stat().st_size > 10_000


def test_merge_split_and_stats(tmp_path, capsys, cli_error):
    root = toy_dataset(tmp_path / "ds")
    run(capsys, "split", root, "--out", tmp_path / "train", tmp_path / "val", "--episodes", "0:3", "3")
    assert [len(Dataset(tmp_path / p)) for p in ("train", "val")] == [3, 1]
    run(capsys, "split", root, "--out", tmp_path / "a", tmp_path / "b", "--fractions", "0.5", "0.5",
        "--seed", "1")
    assert len(Dataset(tmp_path / "a")) == len(Dataset(tmp_path / "b")) == 2
    run(capsys, "split", root, "--out", tmp_path / "tasks", "--by-task")
    assert Dataset(tmp_path / "tasks/place").tasks == ["place"] and len(Dataset(tmp_path / "tasks/pick")) == 2

    out = run(capsys, "merge", tmp_path / "train", tmp_path / "val", "--out", tmp_path / "merged")
    assert "4 episodes, 22 frames, 2 tasks" in out
    merged, original = Dataset(tmp_path / "merged"), Dataset(root)
    np.testing.assert_array_equal(merged.frames(["action"])["action"], original.frames(["action"])["action"])
    err = cli_error("dataset", "merge", tmp_path / "train", tmp_path / "val", "--out", tmp_path / "merged")
    assert "already holds a dataset" in err

    stats = json.loads(run(capsys, "stats", tmp_path / "merged", "--json"))
    assert stats["action"]["count"] == [22] and len(stats["observation.state"]["mean"]) == 3
    table = run(capsys, "stats", tmp_path / "merged", "--recompute")
    for word in ("observation.state", "action", "R", "22"):
        assert word in table


def pointmass_episode(robot: PointMassRobot, seed: int, steps: int) -> dict:
    """What the recorder would write from a robot server running ``robot``: the observation of
    step t, the action taken from it, and the outcome of that action."""
    obs = robot.reset(TASK, seed)
    frames: dict[str, list] = {"observation.state": [], "action": [], "next.reward": [],
                               "next.success": [], "next.done": []}
    for _ in range(steps):
        state = obs.values["observation.state"]
        action = np.clip(-6.0 * state[:2], -1, 1).astype(np.float32)  # drive to the origin
        robot.act(action)
        frames["observation.state"].append(state)
        frames["action"].append(action)
        obs = robot.observe()
        frames["next.reward"].append(obs.reward)
        frames["next.success"].append(obs.success)
        frames["next.done"].append(obs.done)
        if obs.done:
            break
    return {k: np.asarray(v) for k, v in frames.items()}


def test_replay_reproduces_a_recorded_sim_episode(tmp_path, capsys, serve, cli_error):
    rate = 20.0  # 50 ms a tick: room for a loaded test machine to answer every state in time
    recording = PointMassRobot(rate_hz=rate, max_episode_steps=40)
    writer = DatasetWriter(tmp_path / "ds", recording.spec, fps=rate)
    ep = pointmass_episode(recording, seed=3, steps=40)
    writer.add_episode(ep, TASK)
    assert ep["next.success"][-1] and len(ep["action"]) < 40  # reached the origin, ended early
    other_rate = PointMassRobot(rate_hz=10.0)
    DatasetWriter(tmp_path / "slow", other_rate.spec, fps=10.0).add_episode(
        pointmass_episode(other_rate, seed=0, steps=5), TASK)

    with serve(PointMassRobot(rate_hz=rate, max_episode_steps=40)) as server:
        result = json.loads(run(capsys, "replay", tmp_path / "ds", "--robot", server.address,
                                "--episode", "0", "--seed", "3", "--json"))
        assert result["steps"] == result["length"] == len(ep["action"])
        assert result["success"] is True and result["recorded_success"] is True
        # deterministic robot, same start: the same states, unless a tick went without our action
        assert result["late_ticks"] > 0 or result["max_state_deviation"] < 1e-6, result

        # from another start the same actions lead elsewhere, and the deviation shows it
        text = run(capsys, "replay", tmp_path / "ds", "--robot", server.address, "--seed", "4")
        deviation = float(text.split("max observation.state deviation ")[1].split(",")[0])
        assert deviation > 0.01, text

        err = cli_error("dataset", "replay", tmp_path / "ds", "--robot", server.address, "--episode", "1")
        assert "episode 1 is out of range" in err
        err = cli_error("dataset", "replay", tmp_path / "slow", "--robot", server.address,
                        one_line=False)  # a spec mismatch lists each field
        assert "control_rate_hz" in err
