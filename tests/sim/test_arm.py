"""tether's own arm tasks: gymnasium envs, seeding, limits, IK, experts, spec and the sim driver."""

import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from tether.robot.client import RobotClient
from tether.robot.drivers.arm import ArmRobot
from tether.sim import arm
from tether.sim.envs import ENV_IDS  # importing it registers tether/Reach-v0, tether/Push-v0


@pytest.fixture(scope="module")
def scene():
    return arm.Scene.load()


@pytest.mark.parametrize("env_id", sorted(ENV_IDS))
@pytest.mark.parametrize("obs_type", ["state", "pixels", "state+pixels"])
def test_gymnasium_env_checker_passes(env_id, obs_type):
    env = gym.make(env_id, obs_type=obs_type, render_mode="rgb_array", image_size=32,
                   render_height=48, render_width=64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the checker reports problems as warnings
            check_env(env.unwrapped)
        env.reset(seed=0)
        assert env.render().shape == (48, 64, 3)
    finally:
        env.close()


def test_env_ids_carry_the_task_lengths_and_sparse_reward():
    env = gym.make("tether/Reach-v0", reward_type="sparse", action_mode="joint")
    assert env.spec.max_episode_steps == 100 and gym.spec("tether/Push-v0").max_episode_steps == 200
    assert env.action_space.shape == (4,)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(env.action_space.sample())
    assert reward == float(info["success"]) and reward in (0.0, 1.0)
    with pytest.raises(ValueError, match="obs_type"):
        gym.make("tether/Reach-v0", obs_type="rgb")
    with pytest.raises(arm.UnknownTaskError, match="action mode"):
        gym.make("tether/Reach-v0", action_mode="torque")


def test_seed_names_one_episode():
    def rollout(seed):
        env = gym.make("tether/Push-v0")
        env.action_space.seed(0)
        obs, _ = env.reset(seed=seed)
        trace = [obs]
        for _ in range(20):
            trace.append(env.step(env.action_space.sample())[0])
        return np.array(trace)

    a, b, c = rollout(5), rollout(5), rollout(6)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], c[0])


@pytest.mark.parametrize("mode", arm.ACTION_MODES)
def test_joint_targets_and_angles_stay_within_limits(scene, mode):
    task = arm.ArmTask("push", mode, scene=scene)
    rng = np.random.default_rng(0)
    feature = arm.action_feature(mode)
    low, high = np.array(feature.low), np.array(feature.high)
    task.reset(0)
    previous = task.data.ctrl[:4].copy()
    for _ in range(300):
        # beyond the action's limits on purpose: the controller must clip them
        task.step(rng.uniform(low - 0.5 * (high - low), high + 0.5 * (high - low)))
        ctrl = task.data.ctrl[:4]
        assert np.all(ctrl >= arm.JOINT_LOW) and np.all(ctrl <= arm.JOINT_HIGH)
        assert np.all(np.abs(ctrl - previous) <= arm.MAX_JOINT_STEP + 1e-9)  # velocity limit
        previous = ctrl.copy()
        q = task.data.qpos[scene.qpos_adr]
        # MuJoCo's joint limits are soft constraints: allow a little penetration
        assert np.all(q >= arm.JOINT_LOW - 0.03) and np.all(q <= arm.JOINT_HIGH + 0.03)


def test_ik_tracks_a_cartesian_target(scene):
    task = arm.ArmTask("reach", scene=scene)
    state = task.reset(1)
    target = np.array([0.22, -0.08, 0.06])
    for _ in range(60):
        error = target - state[arm.EE]
        state = task.step(np.clip(0.8 * error, -arm.MAX_EE_STEP, arm.MAX_EE_STEP)).state
    assert np.linalg.norm(target - state[arm.EE]) < 0.005
    # the tool pitch is held while the position moves
    assert abs(state[1:4].sum() - arm.TOOL_PITCH) < 0.05
    # one step of +x moves the tool point mostly along +x
    before = state[arm.EE].copy()
    for _ in range(3):
        state = task.step(np.array([arm.MAX_EE_STEP, 0, 0])).state
    moved = state[arm.EE] - before
    assert moved[0] > 0.015 and np.all(np.abs(moved[1:]) < 0.3 * moved[0])


def test_ik_uses_mujocos_site_jacobian(scene):
    """A small IK step predicts the motion that finite differences of the kinematics give."""
    data = scene.make_data()
    arm.reset(scene, data, "reach", np.random.default_rng(0))
    data.qpos[scene.qpos_adr] = arm.HOME_QPOS  # at the held tool pitch: the pitch row is idle
    mujoco.mj_forward(scene.model, data)
    delta = np.array([0.002, -0.001, 0.0015])
    dq = arm.ik_delta(scene, data, delta)
    before = data.site_xpos[scene.ee_site].copy()
    data.qpos[scene.qpos_adr] += dq
    mujoco.mj_kinematics(scene.model, data)
    np.testing.assert_allclose(data.site_xpos[scene.ee_site] - before, delta, atol=3e-4)


@pytest.mark.parametrize("name", arm.TASKS)
def test_expert_succeeds_on_90_percent_of_20_seeds(scene, name):
    task, expert = arm.ArmTask(name, scene=scene), arm.expert_policy(name)
    successes = 0
    for seed in range(20):
        state = task.reset(seed)
        assert not arm.evaluate(name, state)[1], "the initial condition is already a success"
        for _ in range(task.max_episode_steps):
            action = expert(state)
            assert action.shape == (3,) and np.all(np.abs(action) <= arm.MAX_EE_STEP + 1e-7)
            result = task.step(action)
            state = result.state
            if result.success:
                successes += 1
                break
    assert successes >= 18, f"{name}: {successes}/20"


def test_rewards_from_states_batch_like_single():
    rng = np.random.default_rng(0)
    states = rng.uniform(-0.3, 0.3, (5, 17)).astype(np.float32)
    for name in arm.TASKS:
        rewards, successes = arm.evaluate(name, states)
        for s, r, ok in zip(states, rewards, successes):
            assert arm.evaluate(name, s) == pytest.approx((r, ok))
    goal_on_tool = np.zeros(17)
    goal_on_tool[arm.EE] = goal_on_tool[arm.GOAL] = (0.2, 0.0, 0.1)
    assert arm.evaluate("reach", goal_on_tool) == (0.0, True)


@pytest.mark.parametrize("mode", arm.ACTION_MODES)
def test_spec_validates_the_drivers_observations_and_actions(mode):
    robot = ArmRobot(("reach", "push"), mode, cameras=("front",), image_size=32)
    robot.connect()
    try:
        spec = robot.spec
        assert spec.control_rate_hz == 50.0 and spec.tasks == ("reach", "push")
        assert spec.observation["observation.state"].names == arm.STATE_NAMES
        for task in spec.tasks:
            obs = robot.reset(task, 3)
            for _ in range(5):
                for key, feature in spec.observation.items():
                    feature.validate(key, obs.values[key])
                action = robot.hold_action()
                spec.action.validate("action", action)
                robot.act(action)
                obs = robot.observe()
            assert obs.values["observation.images.front"].shape == (32, 32, 3)
        assert spec.to_dict() == type(spec).from_json(spec.to_json()).to_dict()
    finally:
        robot.disconnect()
    with pytest.raises(arm.UnknownTaskError, match="unknown arm task 'pick'"):
        arm.arm_spec(("pick",))


def test_robot_server_serves_the_arm_to_a_client(serve):
    from tether.launch.serve import ServeConfig, make_robot

    robot = make_robot(ServeConfig(robot="arm", tasks=("reach",), max_episode_steps=100))
    assert isinstance(robot, ArmRobot) and robot.spec.tasks == ("reach",)
    expert = arm.expert_policy("reach")
    with serve(robot) as server, RobotClient(server.address, spec=arm.arm_spec(("reach",))) as client:
        state = client.reset("reach", seed=2)
        while not state["done"] and state["step"] < 100:
            obs = state["observation"]["observation.state"]
            client.send_action(expert(obs), state["seq"])
            state = client.latest_state()
        assert state["success"] and state["done"]
        assert server.stats.commands_applied > 3 and server.stats.rejected == {}
