"""Simulated robot driver: tether's OpenMANIPULATOR-X tasks (``tether.sim.arm``), one 20 ms control
period per server tick (50 Hz).

The robot server paces it in real time and it reports the task's dense reward and success, like the
MetaWorld driver. All tasks share one MuJoCo scene (one ``MjModel``, one ``MjData``); a reset draws
the named task's initial condition from the seed. ``hold()`` keeps the position targets where they
are (ee_delta: a zero displacement; joint: the current targets).

With ``randomize`` (a ``tether.sim.randomization`` preset, JSON file or config) every episode draws
its physics, sensing, actuation and visual parameters from the reset seed, exactly as env i of
``tether.sim.vec_env.ArmVecEnv`` does for the same seed; ``reality_gap`` is the fixed off-nominal
robot that stands in for the real one. Reward and success always come from the true state; the
published ``observation.state`` is the delayed, noisy one. The parameters of each episode are
logged (logger ``tether.robot.drivers.arm``), kept in ``episode_params`` and published with the
reset observation's ``info`` (``randomization.NAME``, scalars only).
"""

from __future__ import annotations

import logging

import numpy as np

from tether.robot.driver import Observation, Robot, check_reset_args
from tether.robot.spec import RobotSpec


class ArmRobot(Robot):
    """The simulated OpenMANIPULATOR-X, resettable to any of ``tasks``.

    Args:
        tasks: arm task names (``"reach"``, ``"push"``); the first is the default at reset.
        action_mode: ``"ee_delta"`` (m per tick, (3,)) or ``"joint"`` (rad, (4,)).
        max_episode_steps: truncation horizon in control ticks (default: each task's own).
        terminate_on_success: end the episode at the first tick the task is achieved.
        cameras: scene cameras to render each tick (``"front"``, ``"top"``).
        image_size: camera resolution in pixels (square).
        randomize: domain randomization per episode (preset name, JSON file or
            ``RandomizationConfig``); None: the nominal arm.

    Raises:
        tether.sim.arm.UnknownTaskError: an unknown task or action mode.
        tether.sim.randomization.UnknownPresetError: an unknown preset.
    """

    def __init__(
        self,
        tasks: tuple[str, ...] = ("reach", "push"),
        action_mode: str = "ee_delta",
        max_episode_steps: int | None = None,
        terminate_on_success: bool = True,
        cameras: tuple[str, ...] = (),
        image_size: int = 128,
        randomize=None,
    ):
        from tether.sim import arm, randomization

        self._arm = arm
        self._dr = randomization
        self.randomization = randomization.resolve(randomize)
        self.episode_params = None
        self.spec: RobotSpec = arm.arm_spec(tuple(tasks), action_mode, tuple(cameras), image_size)
        self.action_mode = action_mode
        self.max_episode_steps = max_episode_steps
        self.terminate_on_success = terminate_on_success
        self.cameras = tuple(cameras)
        self.image_size = image_size
        self._tasks: dict = {}
        self._cams: list = []
        self._task = None
        self._last: Observation | None = None
        self._randomizer = None
        self._pipes = None

    def connect(self) -> None:
        from tether.sim.render import OffscreenCamera

        from dataclasses import replace

        scene = self._arm.Scene.load()
        if self.randomization.randomizes_model:
            # one private model for all tasks (one is active at a time), rewritten at every reset
            self._randomizer = self._dr.ModelRandomizer(scene)
            scene = replace(scene, model=self._randomizer.make_model())
        if not self.randomization.is_nominal:
            feature = self.spec.action
            self._pipes = self._dr.SignalPipes(
                1, np.array(feature.low), np.array(feature.high), len(self._arm.STATE_NAMES),
                self.randomization.max_latency_steps, self.randomization.max_delay_steps,
            )
        self._scene = scene
        for name in self.spec.tasks:  # build everything now, not in the middle of a tick
            self._tasks[name] = self._arm.ArmTask(
                name, self.action_mode, self.max_episode_steps, scene=scene
            )
        self._cams = [
            OffscreenCamera(scene.model, cam, self.image_size, self.image_size) for cam in self.cameras
        ]

    def _observation(self, state: np.ndarray, **kw) -> Observation:
        values = {"observation.state": state}
        for cam in self._cams:
            values[f"observation.images.{cam.camera}"] = cam.render(self._task.data)
        return Observation(values, **kw)

    def reset(self, task: str | None, seed: int | None) -> Observation:
        check_reset_args(self.spec, task, seed)
        name = task or self.spec.tasks[0]
        if not self._tasks:
            self.connect()
        self._task = self._tasks[name]
        seed = 0 if seed is None else int(seed)
        model = self._scene.model
        params = self._dr.sample(self.randomization, seed, model.ngeom, model.ncam)
        if self._randomizer is not None:
            self._randomizer.apply(model, params)
        state = self._task.reset(seed)
        self.episode_params = params
        info = {}
        if self._pipes is not None:
            state = self._pipes.reset(0, params, state)
            info = {f"randomization.{k}": float(v) for k, v in params.to_dict().items()
                    if isinstance(v, (int, float))}
            logging.getLogger(__name__).info(
                "episode %s seed %d, %s: %s", name, seed, self.randomization.name, params.to_dict())
        self._last = self._observation(state, info=info)
        return self._last

    def act(self, action: np.ndarray) -> None:
        self._step(np.asarray(action, dtype=np.float32))

    def hold_action(self) -> np.ndarray | None:
        if self._task is None:
            return None
        return self._task.hold_action()

    def hold(self) -> np.ndarray | None:
        action = self.hold_action()
        if action is not None:
            self._step(action, hold=True)
        return action

    def _step(self, action: np.ndarray, hold: bool = False) -> None:
        if self._task is None:
            raise RuntimeError("reset() before act()")
        if self._pipes is not None:
            # a hold enters the actuation pipe as "no command" (no noise), like PerturbedRobot's
            pushed = np.full(action.shape, np.nan) if hold else action.astype(np.float64)
            due = self._pipes.actions(pushed[None])[0]
            if np.isnan(due[0]):  # float64 targets, as the vectorized env holds
                due = self._task.data.ctrl[:4].copy() if self.action_mode == "joint" else np.zeros(3)
            action = due
        r = self._task.step(action)
        state = r.state if self._pipes is None else self._pipes.observations(r.state[None])[0]
        terminated = r.success and self.terminate_on_success
        self._last = self._observation(
            state, reward=r.reward, success=r.success, terminated=terminated, truncated=r.truncated
        )

    def observe(self) -> Observation:
        if self._last is None:
            raise RuntimeError("reset() before observe()")
        return self._last

    def disconnect(self) -> None:
        for cam in self._cams:
            cam.close()
        self._cams = []
        self._tasks.clear()
        self._task = None
