"""The batched arm env: rsl_rl's VecEnv interface (shapes, dtypes, device, auto-reset, episode
length buffer), exact parity with the single env and with the randomized robot driver, per-episode
parameter logs, threads, and the gymnasium VectorEnv adapter."""

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from tether.robot.drivers.arm import ArmRobot
from tether.sim import arm
from tether.sim.envs import ArmEnv
from tether.sim.randomization import PRESETS
from tether.sim.vec_env import ArmVecEnv, VecTaskVectorEnv


@pytest.fixture(scope="module")
def scene():
    return arm.Scene.load()


def random_actions(n, a, steps, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-scale, scale, (steps, n, a)).astype(np.float32)


def test_rsl_rl_vec_env_interface(scene):
    pytest.importorskip("rsl_rl")
    from rsl_rl.env import VecEnv
    from tensordict import TensorDict

    env = ArmVecEnv("push", 3, device="cpu", scene=scene, num_threads=2)
    assert isinstance(env, VecEnv)
    assert (env.num_envs, env.num_obs, env.num_actions, env.max_episode_length) == (3, 17, 3, 200)
    assert env.device == torch.device("cpu") and isinstance(env.cfg, dict)
    obs = env.get_observations()
    assert isinstance(obs, TensorDict) and obs.batch_size == torch.Size([3])
    assert obs["policy"].shape == (3, 17) and obs["policy"].dtype == torch.float32
    assert env.episode_length_buf.dtype == torch.int64 and env.episode_length_buf.tolist() == [0] * 3
    obs, rewards, dones, extras = env.step(torch.zeros(3, 3))
    assert obs["policy"].shape == (3, 17) and rewards.shape == (3,) and rewards.dtype == torch.float32
    assert dones.shape == (3,) and dones.dtype == torch.int64
    assert extras["time_outs"].shape == (3,) and extras["time_outs"].dtype == torch.bool
    assert isinstance(extras["log"], dict) and env.episode_length_buf.tolist() == [1] * 3
    assert torch.all(rewards < 0)  # dense: negative distances
    with pytest.raises(ValueError, match="actions of shape"):
        env.step(torch.zeros(3, 4))
    env.close()


def test_auto_reset_and_episode_length_buffer(scene):
    env = ArmVecEnv("reach", 4, seed=100, max_episode_steps=5, terminate_on_success=False,
                    scene=scene, num_threads=1)
    env.episode_length_buf = torch.tensor([0, 1, 2, 3])  # as rsl_rl's init_at_random_ep_len
    done_at = {}
    for t in range(1, 6):
        last = env.obs_buf.clone()
        obs, _, dones, extras = env.step(torch.zeros(4, 3))
        for i in np.flatnonzero(dones.numpy()):
            done_at.setdefault(int(i), t)
            assert extras["time_outs"][i]  # truncated, not terminated
            # the new episode's first observation, named by the logged seed
            seed = env.episode_params[i].seed
            np.testing.assert_array_equal(obs["policy"][i].numpy(), arm.ArmTask("reach").reset(seed))
            assert not torch.equal(extras["final_observations"][i], obs["policy"][i])
            assert env.episode_length_buf[i] == 0
        assert not torch.equal(last, obs["policy"])
    assert done_at == {0: 5, 1: 4, 2: 3, 3: 2}
    env.close()


def test_success_terminates_and_is_logged(scene):
    env = ArmVecEnv("reach", 2, seed=3, normalize_actions=False, scene=scene, num_threads=1)
    expert = arm.expert_policy("reach")
    for _ in range(100):
        state = env.obs_buf.numpy()
        obs, rewards, dones, extras = env.step(torch.from_numpy(np.stack([expert(s) for s in state])))
        if dones.any():
            break
    i = int(np.flatnonzero(dones.numpy())[0])
    assert extras["success"][i] and not extras["time_outs"][i]
    assert extras["log"]["Episode/success_rate"].tolist() == [1.0] * int(dones.sum())
    assert float(extras["log"]["Episode/final_distance_m"].max()) < 0.02
    env.close()


@pytest.mark.parametrize("mode", arm.ACTION_MODES)
def test_parity_with_the_single_env(scene, mode):
    """Same seeds, same actions: the batch reproduces ArmTask exactly (bit for bit), including
    the dense reward, whatever the thread count."""
    n, steps = 5, 40
    feature = arm.action_feature(mode)
    low, high = np.array(feature.low, np.float32), np.array(feature.high, np.float32)
    acts = low + (high - low) * (random_actions(n, len(low), steps) + 1) / 2
    traces = []
    for threads in (1, 2):
        # no termination: ArmTask runs on after a success that a random action may bring
        env = ArmVecEnv("push", n, mode, seed=20, normalize_actions=False, scene=scene,
                        num_threads=threads, terminate_on_success=False)
        trace = [env.obs_buf.numpy().copy()]
        rewards = []
        for a in acts:
            obs, r, _, _ = env.step(torch.from_numpy(a))
            trace.append(obs["policy"].numpy().copy())
            rewards.append(r.numpy().copy())
        traces.append((np.array(trace), np.array(rewards)))
        env.close()
    np.testing.assert_array_equal(traces[0][0], traces[1][0])
    tasks = [arm.ArmTask("push", mode, scene=scene) for _ in range(n)]
    single = [np.stack([t.reset(20 + i) for i, t in enumerate(tasks)])]
    rewards = []
    for a in acts:
        results = [t.step(a[i]) for i, t in enumerate(tasks)]
        single.append(np.stack([r.state for r in results]))
        rewards.append([r.reward for r in results])
    np.testing.assert_array_equal(traces[0][0], np.array(single))
    np.testing.assert_array_equal(traces[0][1], np.array(rewards, np.float32))


def test_normalized_actions_scale_to_the_limits(scene):
    a = random_actions(2, 3, 10, scale=1.5)  # beyond [-1, 1]: clipped
    env = ArmVecEnv("reach", 2, seed=1, scene=scene, num_threads=1)
    raw = ArmVecEnv("reach", 2, seed=1, normalize_actions=False, scene=scene, num_threads=1)
    for x in a:
        obs, *_ = env.step(torch.from_numpy(x))
        ref, *_ = raw.step(torch.from_numpy(np.clip(x, -1, 1) * arm.MAX_EE_STEP))
        np.testing.assert_allclose(obs["policy"].numpy(), ref["policy"].numpy(), atol=1e-6)


def test_randomized_batch_equals_the_randomized_robot_driver(scene, tmp_path):
    """Env i of a randomized batch and the robot server's driver, given the same episode seed
    and actions, publish the same (delayed, noisy) observations: one implementation."""
    seeds = [11, 12, 13]
    log = tmp_path / "params.jsonl"
    env = ArmVecEnv("reach", 3, seed=seeds, randomize="default", normalize_actions=False,
                    scene=scene, param_log=log, num_threads=2)
    acts = random_actions(3, 3, 30, seed=5, scale=arm.MAX_EE_STEP)
    batch = [env.obs_buf.numpy().copy()]
    for a in acts:
        batch.append(env.step(torch.from_numpy(a))[0]["policy"].numpy().copy())
    params = [env.episode_params[i] for i in range(3)]
    env.close()
    robot = ArmRobot(("reach",), randomize="default")
    robot.connect()
    for i, seed in enumerate(seeds):
        trace = [robot.reset("reach", seed).values["observation.state"]]
        assert robot.episode_params == params[i]
        for a in acts:
            robot.act(a[i])
            trace.append(robot.observe().values["observation.state"])
        np.testing.assert_array_equal(np.array(trace), np.array(batch)[:, i])
    robot.disconnect()
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(x["env"], x["seed"]) for x in lines] == [(0, 11), (1, 12), (2, 13)]
    low, high = PRESETS["default"].physics.mass_scale
    assert all(low <= x["mass_scale"] <= high for x in lines)
    assert lines[1]["mass_scale"] == params[1].mass_scale


def test_vector_env_adapter_matches_gymnasium_sync_vector_env(scene):
    """The adapter is a gymnasium VectorEnv with same-step autoreset: the first episodes equal
    SyncVectorEnv(SAME_STEP) of tether/Reach-v0 for the same seed, spaces hold what it returns,
    and gymnasium's episode statistics wrapper accepts it."""
    n = 3
    env = VecTaskVectorEnv(
        ArmVecEnv("reach", n, normalize_actions=False, max_episode_steps=8,
                  terminate_on_success=False, scene=scene, num_threads=1),
        action_space=gym.spaces.Box(-arm.MAX_EE_STEP, arm.MAX_EE_STEP, (3,), np.float32),
        observation_space=gym.spaces.Box(arm.STATE_LOW, arm.STATE_HIGH, dtype=np.float32),
    )
    assert isinstance(env, gym.vector.VectorEnv)
    sync = gym.vector.SyncVectorEnv([lambda: ArmEnv("reach") for _ in range(n)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs, _ = env.reset(seed=7)
    ref, _ = sync.reset(seed=7)
    np.testing.assert_array_equal(obs, ref)
    assert env.observation_space.contains(obs)
    env.action_space.seed(0)
    for t in range(8):
        a = env.action_space.sample()
        obs, rew, term, trunc, infos = env.step(a)
        ref, ref_rew, *_ = sync.step(a)
        assert env.observation_space.contains(obs) and rew.shape == (n,) and term.dtype == bool
        if t < 7:
            np.testing.assert_array_equal(obs, ref)
            np.testing.assert_allclose(rew, ref_rew, rtol=1e-6)
    assert trunc.all() and not term.any()
    assert infos["_final_obs"].all() and infos["final_obs"][0].shape == (17,)
    sync.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # it warns when autoreset_mode is missing or wrong
        stats = gym.wrappers.vector.RecordEpisodeStatistics(env)
    stats.reset(seed=0)
    for _ in range(8):
        *_, infos = stats.step(stats.action_space.sample())
    assert infos["episode"]["l"].tolist() == [8] * n
    stats.close()
