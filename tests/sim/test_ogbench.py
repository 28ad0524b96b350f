"""OGBench adapter: spec, evaluation goals, the oracle play policy, the driver behind a robot server,
`tether collect --env ogbench:*` and in-sim evaluation with videos. Skipped without the extra."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ogbench")

from tether.sim import ogbench as og  # noqa: E402


@pytest.fixture(scope="module")
def cube_sim():
    sim = og.OGBenchSim("cube-single", ("front_pixels",), 32, play_steps=300)
    yield sim
    sim.close()


def test_unknown_env_and_task_are_precise():
    with pytest.raises(og.UnknownEnvError, match=r"'scen'; did you mean scene\? \(tether serves: cube-single, scene\)"):
        og.check_env("scen")
    with pytest.raises(ValueError, match="task1, task2, task3, task4, task5 or play"):
        og.check_task("task6")
    from tether.launch import UsageError
    from tether.launch.serve import ServeConfig, make_robot

    with pytest.raises(UsageError, match="unknown OGBench env 'cube'"):
        make_robot(ServeConfig(robot="ogbench", env="cube"))


def test_spec_validates_observations(cube_sim):
    spec = cube_sim.spec
    assert spec.robot_type == "ogbench-cube-single" and spec.control_rate_hz == 20.0
    assert spec.tasks == (*og.TASKS, "play")
    assert spec.observation["observation.state"].shape == (28,)
    assert spec.observation["observation.qpos"].names[:1] == ("ur5e/shoulder_pan_joint",)
    assert spec.action.low == (-1.0,) * 5 and spec.action.names == og.ACTION_NAMES
    for task in ("play", "task2"):
        values = cube_sim.reset(task, 0)
        assert set(values) == set(spec.observation)
        for key, feature in spec.observation.items():
            feature.validate(key, values[key])
        values, success, truncated = cube_sim.step(np.zeros(5, np.float32))
        for key, feature in spec.observation.items():
            feature.validate(key, values[key])
    scene = og.ogbench_spec("scene", (), goal=False, sim_state=False)
    assert list(scene.observation) == ["observation.state"]
    assert scene.observation["observation.state"].shape == (40,)


def test_evaluation_goals_are_deterministic_by_task_and_seed(cube_sim):
    first = cube_sim.reset("task1", 3)
    again = cube_sim.reset("task1", 3)
    for key in ("observation.state", "observation.goal", "observation.goal_images.front_pixels"):
        np.testing.assert_array_equal(first[key], again[key])
    assert first["observation.goal_images.front_pixels"].any()
    names = og.ENVS["cube-single"].state_names
    cube = [names.index(n) for n in ("cube0_x", "cube0_y", "cube0_z")]
    other_seed = cube_sim.reset("task1", 4)
    np.testing.assert_allclose(other_seed["observation.goal"][cube], first["observation.goal"][cube], atol=0.05)
    assert not np.array_equal(other_seed["observation.state"], first["observation.state"])
    # task1 moves the cube from y = 0.1 to y = -0.1 (OGBench's task_infos): 2 dm apart
    assert first["observation.goal"][cube[1]] == pytest.approx(-1.0, abs=0.1)
    assert first["observation.state"][cube[1]] == pytest.approx(1.0, abs=0.15)
    goals = {t: cube_sim.reset(t, 3)["observation.goal"][cube] for t in og.TASKS}
    assert len({tuple(np.round(g, 1)) for g in goals.values()}) == 5


def _play(policy, sim, seed, steps):
    values = sim.reset("play", seed)
    policy.reset(values, 0, seed)
    actions = []
    for _ in range(steps):
        actions.append(policy(values, sim.steps))
        values, _, truncated = sim.step(actions[-1])
        if truncated:
            break
    return np.stack(actions)


@pytest.mark.parametrize("name", ["cube-single", "scene"])
def test_oracle_play_policy_solves_subtasks(name):
    sim = og.OGBenchSim(name, (), play_steps=300)  # no camera: rendering would dominate
    policy = og.PlayPolicy(name)
    np.random.seed(123)
    actions = _play(policy, sim, seed=1, steps=250)
    # the oracles' draws come from the policy's own generator, not numpy's global one
    np.testing.assert_array_equal(np.random.uniform(size=3), np.random.RandomState(123).uniform(size=3))
    assert sum(policy.stats.started.values()) >= 2, policy.stats  # subtask after subtask
    assert sum(policy.stats.achieved.values()) >= 1, policy.stats
    assert np.abs(actions).max() <= 1
    if name == "cube-single":
        np.testing.assert_array_equal(_play(policy, sim, seed=1, steps=60), actions[:60])  # seeded
    sim.close()


def test_served_robot_publishes_the_goal(serve):
    from tether.robot.client import RobotClient, RobotLinkError
    from tether.robot.drivers.ogbench import OGBenchRobot

    robot = OGBenchRobot("cube-single", cameras=(), play_steps=50)
    with serve(robot) as server, RobotClient(server.address) as client:
        assert client.spec.robot_type == "ogbench-cube-single"
        state = client.reset("task1", 7)
        goal = state["observation"]["observation.goal"]
        assert goal.shape == (28,) and np.abs(goal).sum() > 1
        assert state["task"] == "task1"
        client.send_action(np.zeros(5, np.float32))
        later = client.latest_state()
        np.testing.assert_array_equal(later["observation"]["observation.goal"], goal)
        state = client.reset("play", 7)
        assert not state["observation"]["observation.goal"].any()
        with pytest.raises(RobotLinkError, match=r"reset refused: unknown task 'task9'; this robot serves \['task1'"):
            client.reset("task9", 0)


def test_collect_cube_single_writes_a_readable_dataset_with_video(tmp_path):
    from tether.robot.dataset import Dataset

    root = tmp_path / "play"
    proc = subprocess.run(
        [sys.executable, "-m", "tether.launch.cli", "collect", str(root), "--env", "ogbench:cube-single",
         "--episodes", "2", "--episode-steps", "50", "--image-size", "32", "--rate-hz", "20"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 episodes, 100 frames" in proc.stdout
    dataset = Dataset(root)
    assert len(dataset) == 2 and dataset.spec.robot_type == "ogbench-cube-single"
    assert "observation.goal" not in dataset.spec.observation  # play has no goal
    episode = dataset.episode(1)
    assert episode["observation.state"].shape == (50, 28) and episode["action"].shape == (50, 5)
    assert episode["observation.qpos"].shape == (50, 21)
    assert np.abs(episode["action"]).max() <= 1 and np.abs(episode["action"]).sum() > 10
    video = dataset.video("observation.images.front_pixels", 1)
    assert video.shape == (50, 32, 32, 3)
    assert set(dataset.tasks) == {"play"}
    from tether.launch import UsageError
    from tether.launch.collect import CollectConfig, ogbench_env

    with pytest.raises(UsageError, match="unknown OGBench env 'cube'"):
        ogbench_env(CollectConfig(dataset=None, env="ogbench:cube"))
    with pytest.raises(UsageError, match="--env takes metaworld, ogbench:NAME"):
        ogbench_env(CollectConfig(dataset=None, env="dmc:walker"))

    # The play data trains a goal-observation policy that tether eval runs on OGBench's goals.
    import json

    from tether.launch.cli import main as cli

    cli(["train", str(root), "--out", str(tmp_path / "run"), "--algo", "gcbc", "--goal.kind",
         "hindsight", "--beso.d-model", "16", "--beso.n-layers", "1", "--beso.n-heads", "2",
         "--optim.steps", "5", "--optim.batch-size", "8", "--optim.warmup-steps", "1"])
    cli(["eval", str(tmp_path / "run" / "policy.pt"), "--sim", "ogbench:cube-single", "--episodes",
         "1", "--max-episode-steps", "3", "--videos-per-task", "0", "--out", str(tmp_path / "eval")])
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert sorted(result["tasks"]) == [f"task{i}" for i in range(1, 6)]


def test_evaluate_runs_a_policy_on_the_goals_and_writes_videos(tmp_path):
    seen = []

    class Still:
        resets = 0

        def reset(self):
            self.resets += 1

        def __call__(self, obs, goal):
            seen.append((set(obs), set(goal)))
            return np.zeros(5, np.float32)

    policy = Still()
    result = og.evaluate("cube-single", policy, episodes_per_task=2, tasks=("task1", "task3"),
                         cameras=("front_pixels",), image_size=32, video_dir=tmp_path,
                         max_episode_steps=8, video_size=48)
    assert [(e.task, e.seed, e.success, e.steps) for e in result.episodes] == [
        ("task1", 0, False, 8), ("task1", 1, False, 8), ("task3", 0, False, 8), ("task3", 1, False, 8)]
    assert result.per_task() == {"task1": 0.0, "task3": 0.0} and policy.resets == 4
    assert seen[0] == ({"observation.state", "observation.images.front_pixels"},) * 2
    from tether.robot.video import read_mp4

    videos = [e.video for e in result.episodes if e.video is not None]
    assert len(videos) == 2
    frames = read_mp4(videos[0])
    assert frames.shape == (9, 48, 96, 3)  # the first frame, 8 steps; observation | goal
    assert result.to_dict()["per_task"]["task3"] == 0.0


def test_scene_health_check_follows_ogbench():
    qpos_names = og.sim_layout("scene")[0]
    x, y, z = (qpos_names.index(f"object_joint_0/{a}") for a in "xyz")
    qpos = np.zeros(len(qpos_names), np.float32)
    qpos[[x, y, z]] = (0.4, 0.0, 0.02)
    assert og.scene_healthy("scene", qpos)
    qpos[y] = 0.3  # too far right: out of view
    assert not og.scene_healthy("scene", qpos)
    qpos[[y, z]] = (-0.35, 0.066)  # in the drawer
    assert og.scene_healthy("scene", qpos)
    qpos[z] = 0.02  # left of the table, not in the drawer
    assert not og.scene_healthy("scene", qpos)
    assert og.scene_healthy("cube-single", qpos)
