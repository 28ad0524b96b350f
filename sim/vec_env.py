"""Batched arm env in the Isaac Gym style: N MuJoCo instances stepped in threads, torch tensors on
a device, auto-reset, and rsl_rl's ``VecEnv`` interface; and the other direction, any such env as
a gymnasium ``VectorEnv``.

Conventions follow Isaac Gym's ``VecTask`` (Makoviychuk et al., "Isaac Gym: High performance GPU
based physics simulation for robot learning", NeurIPS 2021 datasets track; ``isaacgymenvs/tasks/
base/vec_task.py``) and legged_gym (Rudin et al., "Learning to walk in minutes using massively
parallel deep reinforcement learning", CoRL 2021): ``num_envs``, ``num_obs``, ``num_actions``,
buffers ``obs_buf`` (N, num_obs), ``rew_buf`` (N,), ``reset_buf`` (N,), ``episode_length_buf``
(N,), ``time_out_buf`` (N,), and environments that reset themselves in the step that ends their
episode (the observation returned for such an env is the new episode's first one). rsl_rl
(rsl-rl-lib 5.5, ``rsl_rl/env/vec_env.py``) reads ``num_envs``, ``num_actions``,
``max_episode_length``, ``episode_length_buf``, ``device``, ``cfg``, ``get_observations()``
(a ``TensorDict`` of observation groups; here the one group ``"policy"``) and ``step(actions)``
-> (observations, rewards (N,), dones (N,), extras) with ``extras["time_outs"]`` (N,) bool for
bootstrapping truncated episodes and ``extras["log"]`` for its logger.

Stepping: the policy's actions are turned into joint targets for all N arms at once (one batched
damped-least-squares solve, ``tether.sim.arm.joint_targets_batch``), then a pool of threads runs
``mj_step`` on the N ``MjData`` (MuJoCo releases the GIL inside ``mj_step``), refreshes their
kinematics and Jacobians, and reads their states. ``mujoco.rollout`` (3.11 has it, with a thread
pool of its own) was measured too: it rolls out open-loop controls from full state vectors, so each
control step would still need every ``MjData`` set and its kinematics recomputed for the IK, and
it was no faster on this scene (11.1 ms vs 9.7 ms for 64 envs x 10 physics steps, 2 threads).
Without randomization all envs share one read-only ``MjModel``; with physics or visual
randomization each env has its own copy (``tether.sim.randomization``).

Seeds: ``reset(seed=s)`` starts env i from seed s + i (gymnasium's ``SyncVectorEnv`` convention),
so env i's first episode equals ``ArmTask(task).reset(s + i)`` and, with randomization, the
robot-server driver's episode of that seed. Later episodes of env i draw their seeds from
``default_rng([s, i])``; every episode's seed and randomized parameters are kept in
``episode_params`` and appended to ``param_log`` (JSON lines) when one is given.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import gymnasium as gym
import mujoco
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from tether.sim import arm
from tether.sim.randomization import (
    EpisodeParams, ModelRandomizer, RandomizationConfig, SignalPipes, resolve, sample,
)

OBS_GROUP = "policy"


class ArmVecEnv:
    """N copies of one arm task, stepped together (Isaac Gym ``VecTask`` / rsl_rl ``VecEnv``).

    Args:
        task: ``"reach"`` or ``"push"``.
        num_envs: N.
        action_mode: ``"ee_delta"`` or ``"joint"`` (``tether.sim.arm``).
        randomize: a preset name (``none``, ``default``, ``reality_gap``), a JSON file or a
            ``RandomizationConfig``; None: nominal.
        device: torch device of every returned tensor (the simulation itself runs on the CPU).
        seed: seed of the first episodes (env i: seed + i).
        num_threads: threads stepping MuJoCo (default: the CPU count, at most N).
        normalize_actions: actions are in [-1, 1] (clipped) and scaled to the action's limits,
            ``center + half_range * a`` (Isaac Gym's ``clip_actions`` and ``action_scale``); False:
            actions in robot units (m or rad).
        terminate_on_success: end an episode at its first successful step (as the robot server's
            arm driver does).
        max_episode_steps: truncation horizon (default: the task's, reach 100 / push 200 steps).
        reward_type: ``"dense"`` (negative distances, m) or ``"sparse"`` (1.0 on success).
        param_log: JSON-lines file that receives one line per episode: env, seed and parameters.
        scene: a loaded scene to share (default: load one).

    Raises:
        tether.sim.arm.UnknownTaskError: unknown task or action mode.
        tether.sim.randomization.UnknownPresetError: unknown randomization.
        ValueError: num_envs < 1, or an unknown reward type.
    """

    def __init__(
        self,
        task: str = "reach",
        num_envs: int = 64,
        action_mode: str = "ee_delta",
        randomize: str | Path | RandomizationConfig | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        num_threads: int | None = None,
        normalize_actions: bool = True,
        terminate_on_success: bool = True,
        max_episode_steps: int | None = None,
        reward_type: str = "dense",
        param_log: Path | str | None = None,
        scene: arm.Scene | None = None,
    ):
        config = arm.check_task(task, action_mode)
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if reward_type not in ("dense", "sparse"):
            raise ValueError(f"reward_type {reward_type!r} is not 'dense' or 'sparse'")
        self.task = task
        self.action_mode = action_mode
        self.num_envs = num_envs
        self.num_obs = len(arm.STATE_NAMES)
        self.num_privileged_obs = None  # the critic sees what the actor sees
        feature = arm.action_feature(action_mode)
        self.num_actions = feature.shape[0]
        self.max_episode_length = max_episode_steps or config.max_episode_steps
        self.device = torch.device(device)
        self.randomization = resolve(randomize)
        self.normalize_actions = normalize_actions
        self.terminate_on_success = terminate_on_success
        self.reward_type = reward_type
        self.cfg: dict[str, Any] = dict(
            task=task, num_envs=num_envs, action_mode=action_mode, seed=seed,
            randomization=self.randomization.to_dict(), normalize_actions=normalize_actions,
            terminate_on_success=terminate_on_success, max_episode_steps=self.max_episode_length,
            reward_type=reward_type,
        )
        self.action_low = np.array(feature.low, np.float64)
        self.action_high = np.array(feature.high, np.float64)
        self._center = (self.action_high + self.action_low) / 2
        self._half = (self.action_high - self.action_low) / 2

        self.scene = scene or arm.Scene.load()
        if self.randomization.randomizes_model:
            self._randomizer: ModelRandomizer | None = ModelRandomizer(self.scene)
            self.scenes = [replace(self.scene, model=self._randomizer.make_model())
                           for _ in range(num_envs)]
        else:
            self._randomizer = None
            self.scenes = [self.scene] * num_envs
        self.datas = [mujoco.MjData(s.model) for s in self.scenes]
        self._pipes = None
        if not self.randomization.is_nominal:
            self._pipes = SignalPipes(
                num_envs, self.action_low, self.action_high, self.num_obs,
                self.randomization.max_latency_steps, self.randomization.max_delay_steps,
            )

        # the arm's joints sit together in qpos and qvel: slices read faster than index arrays
        self._qpos_slice = _as_slice(self.scene.qpos_adr)
        self._qvel_slice = _as_slice(self.scene.dof_adr)
        n, nv = num_envs, self.scene.model.nv
        self._ctrl = np.zeros((n, 4))  # joint targets (rad), mirror of data.ctrl[:4]
        self._q = np.zeros((n, 4))  # measured joint angles (rad)
        self._ee = np.zeros((n, 3))  # tool points (m)
        self._jac_full = np.zeros((n, 3, nv))  # mj_jacSite output per env (m/rad)
        self._state = np.zeros((n, self.num_obs), np.float32)  # true observation.state
        self._ep_success = np.zeros(n, bool)
        self._episode_length = np.zeros(n, np.int64)
        self.episode_params: list[EpisodeParams] = [EpisodeParams(0)] * n
        self.param_log = Path(param_log) if param_log is not None else None
        self._log_file = None

        self.num_threads = max(1, min(num_threads or os.cpu_count() or 1, n))
        bounds = np.linspace(0, n, self.num_threads + 1).astype(int)
        self._chunks = [range(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        self._pool = ThreadPoolExecutor(self.num_threads) if self.num_threads > 1 else None

        self.obs_buf = torch.zeros(n, self.num_obs, device=self.device)
        self.rew_buf = torch.zeros(n, device=self.device)
        self.reset_buf = torch.zeros(n, dtype=torch.long, device=self.device)
        self.time_out_buf = torch.zeros(n, dtype=torch.bool, device=self.device)
        self.extras: dict[str, Any] = {}
        self.reset(seed=seed)

    # ------------------------------------------------------------------ rsl_rl VecEnv interface
    @property
    def episode_length_buf(self) -> torch.Tensor:
        """Steps taken in each env's current episode, int64 (N,) on ``device``; rsl_rl writes it
        (``init_at_random_ep_len``) to spread the first truncations out."""
        return torch.from_numpy(self._episode_length).to(self.device)

    @episode_length_buf.setter
    def episode_length_buf(self, value: torch.Tensor) -> None:
        self._episode_length[:] = value.detach().to("cpu").numpy()

    def get_observations(self):
        """The current observations: a ``TensorDict`` with group ``"policy"`` (N, num_obs) float32.

        Raises:
            ImportError: tensordict is not installed (``pip install tether[sim-rl]``).
        """
        from tensordict import TensorDict

        return TensorDict({OBS_GROUP: self.obs_buf}, batch_size=[self.num_envs], device=self.device)

    def reset(self, seed: int | Sequence[int] | None = None):
        """Reset every env. ``seed``: an int (env i from seed + i; later episodes seeded from it),
        one seed per env, or None (each env's next seed). Returns (observations, extras)."""
        n = self.num_envs
        if seed is None:
            seeds = [self._next_seed(i) for i in range(n)]
        else:
            if np.ndim(seed) == 0:
                base = int(seed)
                seeds = [base + i for i in range(n)]
            else:
                seeds = [int(s) for s in seed]
                if len(seeds) != n:
                    raise ValueError(f"{len(seeds)} seeds for {n} envs")
                base = seeds[0]
            self._seed_rngs = [np.random.default_rng([base, i]) for i in range(n)]
        obs = self._state.copy()
        for i in range(n):
            obs[i] = self._reset_env(i, seeds[i])
        self.obs_buf = torch.from_numpy(obs).to(self.device)
        self.extras = {}
        return self.get_observations(), self.extras

    def step(self, actions: torch.Tensor):
        """Apply one action per env for one 20 ms control period.

        Args:
            actions: (N, num_actions), in [-1, 1] (``normalize_actions``) or robot units.

        Returns:
            observations (``TensorDict``, group ``"policy"`` (N, num_obs) float32; envs whose
            episode ended show their new episode), rewards (N,) float32, dones (N,) int64, extras:
            ``time_outs`` (N,) bool (truncated, not terminated), ``final_observations`` (N,
            num_obs) (the last observation of envs whose episode ended; other rows are the
            current ones), ``log`` (episode success rate and final distance (m) of the episodes
            that ended, for rsl_rl's logger).

        Raises:
            ValueError: actions of the wrong shape.
        """
        n = self.num_envs
        if tuple(actions.shape) != (n, self.num_actions):
            raise ValueError(f"actions of shape {tuple(actions.shape)}, expected {(n, self.num_actions)}")
        a = torch.as_tensor(actions).detach().to("cpu", torch.float64).numpy()
        if self.normalize_actions:
            a = self._center + self._half * np.minimum(np.maximum(a, -1.0), 1.0)
        if self._pipes is not None:
            a = self._pipes.actions(a)
            hold = np.isnan(a[:, 0])
            if hold.any():
                a[hold] = self._ctrl[hold] if self.action_mode == "joint" else 0.0
        jac = self._jac_full[:, :, self.scene.dof_adr] if self.action_mode == "ee_delta" else None
        self._ctrl = arm.joint_targets_batch(self._ctrl, self._q, self._ee, jac, a, self.action_mode)
        if self._pool is None:
            self._physics(self._chunks[0])
        else:
            for future in [self._pool.submit(self._physics, c) for c in self._chunks]:
                future.result()

        dense, success = arm.evaluate(self.task, self._state)
        reward = dense if self.reward_type == "dense" else success.astype(np.float64)
        self._episode_length += 1
        self._ep_success |= success
        time_out = self._episode_length >= self.max_episode_length
        terminated = success & self.terminate_on_success
        done = terminated | time_out
        obs = self._state.copy() if self._pipes is None else self._pipes.observations(self._state)
        final = obs.copy()
        log: dict[str, torch.Tensor] = {}
        ended = np.flatnonzero(done)
        if ended.size:
            log["Episode/success_rate"] = torch.from_numpy(self._ep_success[ended].astype(np.float32))
            log["Episode/final_distance_m"] = torch.from_numpy(-dense[ended].astype(np.float32))
            for i in ended:
                obs[i] = self._reset_env(i, self._next_seed(i))
        self.obs_buf = torch.from_numpy(obs).to(self.device)
        self.rew_buf = torch.from_numpy(reward.astype(np.float32)).to(self.device)
        self.reset_buf = torch.from_numpy(done.astype(np.int64)).to(self.device)
        self.time_out_buf = torch.from_numpy(time_out & ~terminated).to(self.device)
        self.extras = {
            "time_outs": self.time_out_buf,
            "final_observations": torch.from_numpy(final).to(self.device),
            "success": torch.from_numpy(success).to(self.device),
            "log": log,
        }
        return self.get_observations(), self.rew_buf, self.reset_buf, self.extras

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # ----------------------------------------------------------------------------- internals
    def _physics(self, envs: range) -> None:
        """Step ``envs`` one control period each and read their states (runs in a worker thread;
        each env's arrays are written by this thread only). The state is written in place, slice
        by slice, as ``tether.sim.arm.get_state`` builds it: the Python between two ``mj_step``
        calls holds the GIL, so it is kept short."""
        scene, jacobian = self.scene, self.action_mode == "ee_delta"
        ee_site, q_at, v_at, puck, goal = scene.ee_site, self._qpos_slice, self._qvel_slice, scene.puck_qpos, scene.goal_mocap
        state, q, ee, ctrl, jac = self._state, self._q, self._ee, self._ctrl, self._jac_full
        for i in envs:
            m, d = self.scenes[i].model, self.datas[i]
            d.ctrl[:4] = ctrl[i]
            mujoco.mj_step(m, d, nstep=arm.FRAME_SKIP)
            mujoco.mj_kinematics(m, d)  # as tether.sim.arm.step: sites and Jacobian inputs now
            if jacobian:
                mujoco.mj_comPos(m, d)
                mujoco.mj_jacSite(m, d, jac[i], None, ee_site)
            row = state[i]
            q[i] = row[0:4] = d.qpos[q_at]
            row[4:8] = d.qvel[v_at]
            ee[i] = row[arm.EE] = d.site_xpos[ee_site]
            row[arm.OBJ] = d.qpos[puck:puck + 3]
            row[arm.GOAL] = d.mocap_pos[goal]

    def _next_seed(self, i: int) -> int:
        return int(self._seed_rngs[i].integers(2**31 - 1))

    def _reset_env(self, i: int, seed: int) -> np.ndarray:
        """Start env ``i``'s episode named by ``seed``; returns its first observation (S,)."""
        scene, data = self.scenes[i], self.datas[i]
        params = sample(self.randomization, seed, scene.model.ngeom, scene.model.ncam)
        if self._randomizer is not None:
            self._randomizer.apply(scene.model, params)
        arm.reset(scene, data, self.task, np.random.default_rng(seed))
        self._ctrl[i] = data.ctrl[:4]
        self._q[i] = data.qpos[scene.qpos_adr]
        self._ee[i] = data.site_xpos[scene.ee_site]
        if self.action_mode == "ee_delta":
            mujoco.mj_jacSite(scene.model, data, self._jac_full[i], None, scene.ee_site)
        self._state[i] = arm.get_state(scene, data)
        self._episode_length[i] = 0
        self._ep_success[i] = False
        self.episode_params[i] = params
        self._log_params(i, params)
        if self._pipes is None:
            return self._state[i].copy()
        return self._pipes.reset(i, params, self._state[i])

    def _log_params(self, i: int, params: EpisodeParams) -> None:
        if self.param_log is None:
            return
        if self._log_file is None:
            self.param_log.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.param_log.open("a")
        self._log_file.write(json.dumps({"env": int(i), **params.to_dict()}) + "\n")

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: modules may be gone
            pass


def _as_slice(index: np.ndarray) -> slice | np.ndarray:
    """``index`` as a slice when it is a run of consecutive integers, else unchanged."""
    index = np.asarray(index)
    if len(index) and (np.diff(index) == 1).all():
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def _register_with_rsl_rl() -> None:
    """Make ``isinstance(env, rsl_rl.env.VecEnv)`` true without importing rsl_rl for everyone."""
    try:
        from rsl_rl.env import VecEnv
    except ImportError:
        return
    VecEnv.register(ArmVecEnv)


_register_with_rsl_rl()


class VecTaskVectorEnv(gym.vector.VectorEnv):
    """Any Isaac-Gym-style batched env (``ArmVecEnv``, a ``VecTask``, an rsl_rl ``VecEnv``) as a
    gymnasium ``VectorEnv`` (numpy in and out).

    The wrapped env must have ``num_envs``, ``num_actions``, ``device``, ``get_observations()``
    and ``step(actions)`` as rsl_rl's ``VecEnv``; ``reset(seed=...)`` is used when it has one.
    Observations may be a tensor, or a dict / TensorDict (``obs_group``, else its ``"obs"`` entry:
    Isaac Gym's ``obs_dict``).

    Such envs reset themselves in the step that ends an episode, which gymnasium calls
    ``AutoresetMode.SAME_STEP``: ``infos["final_obs"]`` (object array, with mask
    ``infos["_final_obs"]``) holds the last observation of the envs that ended, taken from the
    env's ``extras["final_observations"]`` when it provides it (``ArmVecEnv`` does), else None.
    ``terminations`` are dones that were not time-outs; ``truncations`` are the time-outs.

    Args:
        env: the batched env.
        observation_space, action_space: single-env spaces (default: unbounded float32 Box of
            ``num_obs``, and Box [-1, 1]^num_actions float32).
        obs_group: the observation group to expose.
    """

    def __init__(self, env, observation_space=None, action_space=None, obs_group: str = OBS_GROUP):
        self.env = env
        self.num_envs = env.num_envs
        self.obs_group = obs_group
        num_obs = getattr(env, "num_obs", None) or self._obs(env.get_observations()).shape[1]
        self.single_observation_space = observation_space or spaces.Box(
            -np.inf, np.inf, (num_obs,), np.float32)
        self.single_action_space = action_space or spaces.Box(-1.0, 1.0, (env.num_actions,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
        self.render_mode = None
        self.closed = False

    def _obs(self, obs) -> torch.Tensor:
        if isinstance(obs, torch.Tensor):
            return obs
        if self.obs_group in obs.keys():
            return obs[self.obs_group]
        return obs["obs"]

    def _numpy(self, x: torch.Tensor, dtype) -> np.ndarray:
        return x.detach().to("cpu").numpy().astype(dtype, copy=False)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if hasattr(self.env, "reset"):
            result = self.env.reset(seed=seed) if seed is not None else self.env.reset()
            obs = result[0] if isinstance(result, tuple) else result
        else:
            obs = self.env.get_observations()
        dtype = self.single_observation_space.dtype
        return self._numpy(self._obs(obs), dtype), {}

    def step(self, actions):
        tensor = torch.as_tensor(np.asarray(actions), dtype=torch.float32, device=self.env.device)
        obs, rewards, dones, extras = self.env.step(tensor)
        dtype = self.single_observation_space.dtype
        dones = self._numpy(dones, bool)
        time_outs = extras.get("time_outs")
        time_outs = np.zeros_like(dones) if time_outs is None else self._numpy(time_outs, bool) & dones
        infos: dict[str, Any] = {}
        if dones.any():
            final = extras.get("final_observations")
            final = None if final is None else self._numpy(final, dtype)
            array = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(dones):
                array[i] = None if final is None else final[i]
            infos["final_obs"], infos["_final_obs"] = array, dones.copy()
            infos["final_info"], infos["_final_info"] = {}, dones.copy()
        return (self._numpy(self._obs(obs), dtype), self._numpy(rewards, np.float64),
                dones & ~time_outs, time_outs, infos)

    def close_extras(self, **kwargs) -> None:
        if hasattr(self.env, "close"):
            self.env.close()
