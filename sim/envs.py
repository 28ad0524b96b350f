"""Gymnasium environments of tether's arm tasks: ``tether/Reach-v0`` and ``tether/Push-v0``.

Importing this module registers them (``import tether.sim.envs``, then ``gymnasium.make``), or
let gymnasium import it: ``gymnasium.make("tether.sim.envs:tether/Reach-v0")``. Registration is
here rather than in ``tether.sim`` so that importing ``tether.sim`` (the robot computer's sim
driver, MetaWorld) does not need gymnasium.

Example::

    import gymnasium as gym
    import tether.sim.envs  # noqa: F401 (registers the ids)

    env = gym.make("tether/Push-v0", obs_type="state+pixels", action_mode="ee_delta",
                   reward_type="dense", render_mode="rgb_array")
    obs, info = env.reset(seed=0)

Keyword arguments (all optional) are those of ``ArmEnv``. The tasks, units and rewards are
documented in ``tether.sim.arm``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from tether.sim import arm

ENV_IDS = {"tether/Reach-v0": "reach", "tether/Push-v0": "push"}
OBS_TYPES = ("state", "pixels", "state+pixels")
REWARD_TYPES = ("dense", "sparse")


class ArmEnv(gym.Env):
    """One arm task as a gymnasium environment.

    Args:
        task: ``"reach"`` or ``"push"``.
        obs_type: ``"state"`` (float32 (17,), ``tether.sim.arm.STATE_NAMES``), ``"pixels"``
            (uint8 (image_size, image_size, 3) from ``camera``) or ``"state+pixels"`` (a dict with
            both, keys ``"state"`` and ``"pixels"``).
        action_mode: ``"ee_delta"`` (m per step, (3,), each in [-0.01, 0.01]) or ``"joint"``
            (absolute joint targets in rad, (4,), within the joint limits). Actions outside the
            space are clipped to it.
        reward_type: ``"dense"`` (negative distances in m) or ``"sparse"`` (1.0 on success, else 0).
        render_mode: None or ``"rgb_array"`` (uint8 (render_height, render_width, 3)).
        image_size: side of the pixel observation (pixels).
        camera: the camera of the pixel observation and of ``render`` (``"front"`` or ``"top"``).
        render_height, render_width: size of ``render()`` frames (pixels).
        terminate_on_success: end the episode (``terminated``) at the first successful step.

    ``info`` holds ``"success"`` (bool) and ``"is_success"`` (the same, as gymnasium-robotics
    names it). Episodes are truncated by gymnasium's ``TimeLimit`` at the task's length (reach 100,
    push 200 steps) when made through ``gymnasium.make``.

    Raises:
        ValueError: an unknown task, action mode, obs_type, reward_type or render_mode.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(arm.CONTROL_RATE_HZ)}

    def __init__(
        self,
        task: str = "reach",
        obs_type: str = "state",
        action_mode: str = "ee_delta",
        reward_type: str = "dense",
        render_mode: str | None = None,
        image_size: int = 84,
        camera: str = "front",
        render_height: int = 240,
        render_width: int = 320,
        terminate_on_success: bool = False,
    ):
        arm.check_task(task, action_mode)
        if obs_type not in OBS_TYPES:
            raise ValueError(f"obs_type {obs_type!r} is not one of {list(OBS_TYPES)}")
        if reward_type not in REWARD_TYPES:
            raise ValueError(f"reward_type {reward_type!r} is not one of {list(REWARD_TYPES)}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} is not one of [None, 'rgb_array']")
        self.task = task
        self.obs_type = obs_type
        self.action_mode = action_mode
        self.reward_type = reward_type
        self.render_mode = render_mode
        self.camera = camera
        self.image_size = image_size
        self.render_size = (render_height, render_width)
        self.terminate_on_success = terminate_on_success
        self.scene = arm.Scene.load()
        self.data = self.scene.make_data()
        if camera not in [self.scene.model.camera(i).name for i in range(self.scene.model.ncam)]:
            raise ValueError(f"camera {camera!r} is not in the arm scene")

        feature = arm.action_feature(action_mode)
        self.action_space = spaces.Box(
            np.array(feature.low, np.float32), np.array(feature.high, np.float32), dtype=np.float32
        )
        state_space = spaces.Box(arm.STATE_LOW, arm.STATE_HIGH, dtype=np.float32)
        pixel_space = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = {
            "state": state_space,
            "pixels": pixel_space,
            "state+pixels": spaces.Dict({"state": state_space, "pixels": pixel_space}),
        }[obs_type]
        self._obs_camera = None
        self._render_camera = None

    def _pixels(self) -> np.ndarray:
        if self._obs_camera is None:
            from tether.sim.render import OffscreenCamera

            self._obs_camera = OffscreenCamera(
                self.scene.model, self.camera, self.image_size, self.image_size
            )
        return self._obs_camera.render(self.data).copy()

    def _observation(self, state: np.ndarray) -> Any:
        if self.obs_type == "state":
            return state
        if self.obs_type == "pixels":
            return self._pixels()
        return {"state": state, "pixels": self._pixels()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        arm.reset(self.scene, self.data, self.task, self.np_random)
        state = arm.get_state(self.scene, self.data)
        _, success = arm.evaluate(self.task, state)
        return self._observation(state), {"success": success, "is_success": success}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float32), self.action_space.low, self.action_space.high)
        arm.step(self.scene, self.data, action, self.action_mode)
        state = arm.get_state(self.scene, self.data)
        dense, success = arm.evaluate(self.task, state)
        reward = dense if self.reward_type == "dense" else float(success)
        terminated = bool(success and self.terminate_on_success)
        info = {"success": success, "is_success": success}
        return self._observation(state), float(reward), terminated, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._render_camera is None:
            from tether.sim.render import OffscreenCamera

            self._render_camera = OffscreenCamera(self.scene.model, self.camera, *self.render_size)
        return self._render_camera.render(self.data).copy()

    def close(self) -> None:
        for cam in (self._obs_camera, self._render_camera):
            if cam is not None:
                cam.close()
        self._obs_camera = self._render_camera = None


def register_envs() -> None:
    """Register ``ENV_IDS`` with gymnasium (idempotent)."""
    for env_id, task in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(
                env_id,
                entry_point="tether.sim.envs:ArmEnv",
                kwargs={"task": task},
                max_episode_steps=arm.TASK_CONFIGS[task].max_episode_steps,
            )


register_envs()
