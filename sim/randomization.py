"""Domain randomization of tether's arm (``tether.sim.arm``): physics, sensing, actuation and
visuals, drawn per episode from one config.

Domain randomization trains a policy on a distribution of simulators wide enough that the real
robot looks like one more sample of it (Tobin et al., "Domain randomization for transferring deep
neural networks from simulation to the real world", IROS 2017; Peng et al., "Sim-to-real transfer
of robotic control with dynamics randomization", ICRA 2018, which randomizes masses, damping,
friction, gains, observation noise and action latency as here; OpenAI et al., "Learning dexterous
in-hand manipulation", 2018, for per-episode sampling and sensing noise).

One ``RandomizationConfig`` holds a (low, high) range per parameter, in four groups:

==========  ==============================================================================
group       parameters (units)
==========  ==============================================================================
physics     mass_scale (link and puck masses and inertias), friction_scale (sliding friction of
            every geom), damping_scale (arm joint damping), gain_scale (servo stiffness kp; kv
            follows as sqrt so the damping ratio stays), all unitless factors of the nominal
sensing     obs_noise_joint_pos (rad), obs_noise_joint_vel (rad/s), obs_noise_position (m): std
            of Gaussian noise on ``observation.state``; obs_delay_steps (control steps, 20 ms)
actuation   latency_steps (control steps before an action takes effect; meanwhile the arm
            holds), action_noise (std of Gaussian noise as a fraction of the action's half range)
visual      light_scale (diffuse intensity factor), color_jitter (+- per RGB channel per geom),
            camera_pos_m (+- m per axis), camera_rot_rad (+- rad about each axis)
==========  ==============================================================================

Each episode draws one ``EpisodeParams`` (uniform in every range; integers inclusive) from its
seed (``sample(config, seed)``), so an episode is named by (config, seed) exactly and the sampled
values can be logged and replayed. Presets: ``none`` (nominal, nothing drawn), ``default`` (the
training distribution) and ``reality_gap`` (degenerate ranges: one fixed robot away from
nominal, with latency and noise; the stand-in real robot that ``tether serve --robot arm
--randomize reality_gap`` serves).

Physics and visual parameters live in the ``MjModel``, which ``tether.sim.arm`` shares read-only
between envs: a randomized env gets its own copy (``copy.copy(model)``, ~0.3 ms and 36 kB each for
this scene, once per env) and ``ModelRandomizer.apply`` rewrites it at every reset. Sensing and
actuation are signals around the simulator: ``SignalPipes`` delays and perturbs them for N envs at
once, with one noise generator per env so that env i of a batch and the single-env driver draw the
same noise for the same episode seed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import mujoco
import numpy as np

from tether.sim import arm

Range = tuple[float, float]
IntRange = tuple[int, int]
# Streams of an episode's seed (the initial condition uses the seed itself, as tether.sim.arm).
PARAMS_STREAM = 1
NOISE_STREAM = 2


class UnknownPresetError(ValueError):
    """The randomization preset is not one of ``PRESETS`` (and not a JSON file)."""


@dataclass(frozen=True)
class PhysicsRanges:
    """Ranges of unitless factors on the nominal physics (1.0 = the MJCF's value)."""

    mass_scale: Range = (1.0, 1.0)
    friction_scale: Range = (1.0, 1.0)
    damping_scale: Range = (1.0, 1.0)
    gain_scale: Range = (1.0, 1.0)


@dataclass(frozen=True)
class SensingRanges:
    """Ranges of observation noise std (rad, rad/s, m) and delay (control steps)."""

    obs_noise_joint_pos: Range = (0.0, 0.0)
    obs_noise_joint_vel: Range = (0.0, 0.0)
    obs_noise_position: Range = (0.0, 0.0)
    obs_delay_steps: IntRange = (0, 0)


@dataclass(frozen=True)
class ActuationRanges:
    """Ranges of actuation latency (control steps) and action noise (fraction of half range)."""

    latency_steps: IntRange = (0, 0)
    action_noise: Range = (0.0, 0.0)


@dataclass(frozen=True)
class VisualRanges:
    """Ranges of the rendered scene's lighting, colours and camera pose."""

    light_scale: Range = (1.0, 1.0)
    color_jitter: float = 0.0
    camera_pos_m: float = 0.0
    camera_rot_rad: float = 0.0


@dataclass(frozen=True)
class RandomizationConfig:
    """Per-episode randomization of the arm: one range per parameter (see the module docstring).

    Raises (at construction):
        ValueError: a range with low > high, a negative noise or delay, or a scale <= 0.
    """

    name: str = "custom"
    physics: PhysicsRanges = field(default_factory=PhysicsRanges)
    sensing: SensingRanges = field(default_factory=SensingRanges)
    actuation: ActuationRanges = field(default_factory=ActuationRanges)
    visual: VisualRanges = field(default_factory=VisualRanges)

    def __post_init__(self):
        for group in (self.physics, self.sensing, self.actuation, self.visual):
            for f in fields(group):
                value = getattr(group, f.name)
                if isinstance(value, tuple):
                    low, high = value
                    if low > high:
                        raise ValueError(f"{f.name}: low {low} > high {high}")
                    if low < 0 or (f.name.endswith("scale") and low <= 0):
                        raise ValueError(f"{f.name}: {value} must be positive")
                elif value < 0:
                    raise ValueError(f"{f.name}: {value} must be >= 0")

    @property
    def randomizes_model(self) -> bool:
        """Whether episodes need their own ``MjModel`` (any physics or visual parameter varies or
        is off nominal)."""
        return self.physics != PhysicsRanges() or self.visual != VisualRanges()

    @property
    def max_latency_steps(self) -> int:
        return self.actuation.latency_steps[1]

    @property
    def max_delay_steps(self) -> int:
        return self.sensing.obs_delay_steps[1]

    @property
    def is_nominal(self) -> bool:
        """Nothing is randomized or perturbed (the ``none`` preset)."""
        return (self.physics, self.sensing, self.actuation, self.visual) == (
            PhysicsRanges(), SensingRanges(), ActuationRanges(), VisualRanges())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RandomizationConfig:
        """Inverse of ``to_dict``; missing groups or fields keep their nominal defaults.

        Raises:
            ValueError: unknown keys or bad ranges.
        """
        groups = {"physics": PhysicsRanges, "sensing": SensingRanges,
                  "actuation": ActuationRanges, "visual": VisualRanges}
        unknown = set(d) - set(groups) - {"name"}
        if unknown:
            raise ValueError(f"unknown randomization keys {sorted(unknown)}")
        kwargs = {}
        for key, group in groups.items():
            values = dict(d.get(key, {}))
            names = {f.name for f in fields(group)}
            if set(values) - names:
                raise ValueError(f"unknown {key} parameters {sorted(set(values) - names)}")
            kwargs[key] = group(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
        return cls(name=d.get("name", "custom"), **kwargs)


PRESETS: dict[str, RandomizationConfig] = {
    "none": RandomizationConfig("none"),
    # The training distribution: wide enough to cover the reality gap below and then some
    # (Peng et al. 2018 randomize masses and gains by +-30-50 % and latency over a few steps).
    "default": RandomizationConfig(
        "default",
        PhysicsRanges(mass_scale=(0.7, 1.4), friction_scale=(0.5, 1.5), damping_scale=(0.5, 2.0),
                      gain_scale=(0.6, 1.3)),
        SensingRanges(obs_noise_joint_pos=(0.0, 0.01), obs_noise_joint_vel=(0.0, 0.1),
                      obs_noise_position=(0.0, 0.005), obs_delay_steps=(0, 2)),
        ActuationRanges(latency_steps=(0, 3), action_noise=(0.0, 0.1)),
        VisualRanges(light_scale=(0.5, 1.5), color_jitter=0.1, camera_pos_m=0.02,
                     camera_rot_rad=0.05),
    ),
    # The stand-in real robot: one fixed set of parameters away from nominal (a heavier, softer,
    # more damped arm: servos at 0.7 kp, as at a lower supply voltage), 40 ms of actuation latency
    # (a 50 Hz bus round trip plus the servo's profile), one step of sensing delay and sensor noise.
    "reality_gap": RandomizationConfig(
        "reality_gap",
        PhysicsRanges(mass_scale=(1.25, 1.25), friction_scale=(0.7, 0.7),
                      damping_scale=(1.6, 1.6), gain_scale=(0.7, 0.7)),
        SensingRanges(obs_noise_joint_pos=(0.005, 0.005), obs_noise_joint_vel=(0.05, 0.05),
                      obs_noise_position=(0.003, 0.003), obs_delay_steps=(1, 1)),
        ActuationRanges(latency_steps=(2, 2), action_noise=(0.05, 0.05)),
        VisualRanges(light_scale=(0.8, 0.8)),
    ),
}


def resolve(randomize: str | Path | RandomizationConfig | None) -> RandomizationConfig:
    """The config named by ``randomize``: a preset name, a JSON file of ``to_dict``'s form, a
    config (returned as is) or None (``none``).

    Raises:
        UnknownPresetError: neither a preset nor an existing JSON file.
        ValueError: the JSON file holds bad ranges or unknown keys.
    """
    if randomize is None:
        return PRESETS["none"]
    if isinstance(randomize, RandomizationConfig):
        return randomize
    if str(randomize) in PRESETS:
        return PRESETS[str(randomize)]
    path = Path(randomize)
    if path.suffix == ".json" and path.is_file():
        return RandomizationConfig.from_dict(json.loads(path.read_text()))
    raise UnknownPresetError(
        f"unknown randomization {str(randomize)!r}: use a preset ({', '.join(PRESETS)}) or a JSON file"
    )


@dataclass(frozen=True)
class EpisodeParams:
    """The parameters of one episode (see ``RandomizationConfig`` for units)."""

    seed: int
    mass_scale: float = 1.0
    friction_scale: float = 1.0
    damping_scale: float = 1.0
    gain_scale: float = 1.0
    obs_noise_joint_pos: float = 0.0
    obs_noise_joint_vel: float = 0.0
    obs_noise_position: float = 0.0
    obs_delay_steps: int = 0
    latency_steps: int = 0
    action_noise: float = 0.0
    light_scale: float = 1.0
    color_offset: tuple = ()  # (ngeom, 3) RGB offsets, nested tuples; () = none
    camera_offset_m: tuple = ()  # (ncam, 3)
    camera_rot_rad: tuple = ()  # (ncam, 3) rotation vector

    def obs_noise_std(self) -> np.ndarray:
        """Noise std per ``observation.state`` element, float64 (17,): joint angles (rad), joint
        speeds (rad/s), then the 9 positions (m)."""
        return np.array([self.obs_noise_joint_pos] * 4 + [self.obs_noise_joint_vel] * 4
                        + [self.obs_noise_position] * 9)

    def to_dict(self) -> dict:
        """JSON-ready (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))


def sample(config: RandomizationConfig, seed: int, ngeom: int = 0, ncam: int = 0) -> EpisodeParams:
    """Draw the parameters of the episode named by ``seed`` (from ``default_rng([seed, 1])``).

    ``ngeom``/``ncam``: the scene's geom and camera counts, for per-geom colours and per-camera
    poses (0: none drawn). The ``none`` preset draws nothing and returns nominal values.
    """
    if config.is_nominal:
        return EpisodeParams(int(seed))
    rng = np.random.default_rng([int(seed), PARAMS_STREAM])

    def uniform(r: Range) -> float:
        return float(rng.uniform(r[0], r[1]))

    def integer(r: IntRange) -> int:
        return int(rng.integers(r[0], r[1] + 1))

    p, s, a, v = config.physics, config.sensing, config.actuation, config.visual
    values = dict(
        mass_scale=uniform(p.mass_scale), friction_scale=uniform(p.friction_scale),
        damping_scale=uniform(p.damping_scale), gain_scale=uniform(p.gain_scale),
        obs_noise_joint_pos=uniform(s.obs_noise_joint_pos),
        obs_noise_joint_vel=uniform(s.obs_noise_joint_vel),
        obs_noise_position=uniform(s.obs_noise_position), obs_delay_steps=integer(s.obs_delay_steps),
        latency_steps=integer(a.latency_steps), action_noise=uniform(a.action_noise),
        light_scale=uniform(v.light_scale),
    )
    if v.color_jitter > 0 and ngeom:
        values["color_offset"] = _nested(rng.uniform(-v.color_jitter, v.color_jitter, (ngeom, 3)))
    if v.camera_pos_m > 0 and ncam:
        values["camera_offset_m"] = _nested(rng.uniform(-v.camera_pos_m, v.camera_pos_m, (ncam, 3)))
    if v.camera_rot_rad > 0 and ncam:
        values["camera_rot_rad"] = _nested(
            rng.uniform(-v.camera_rot_rad, v.camera_rot_rad, (ncam, 3)))
    return EpisodeParams(int(seed), **values)


def _nested(a: np.ndarray) -> tuple:
    return tuple(tuple(float(x) for x in row) for row in a)


class ModelRandomizer:
    """Writes an episode's physics and visual parameters into a per-env ``MjModel`` copy.

    Args:
        scene: the arm scene whose (shared, nominal) model the copies come from.

    The nominal values are read once from ``scene.model``; ``apply`` scales from them, so
    parameters never compound over episodes.
    """

    def __init__(self, scene: arm.Scene):
        m = scene.model
        self.scene = scene
        self._mass = m.body_mass.copy()
        self._inertia = m.body_inertia.copy()
        self._friction = m.geom_friction.copy()
        self._damping = m.dof_damping.copy()
        self._gain = m.actuator_gainprm.copy()
        self._bias = m.actuator_biasprm.copy()
        self._light = m.light_diffuse.copy()
        self._rgba = m.geom_rgba.copy()
        self._cam_pos = m.cam_pos.copy()
        self._cam_quat = m.cam_quat.copy()
        self._scratch = mujoco.MjData(m)  # mj_setConst overwrites its data argument

    def make_model(self) -> mujoco.MjModel:
        """A private copy of the nominal model."""
        import copy

        return copy.copy(self.scene.model)

    def apply(self, model: mujoco.MjModel, params: EpisodeParams) -> None:
        """Write ``params`` into ``model`` (a copy from ``make_model``), then recompute the
        constants that depend on masses (``mj_setConst``: subtree masses, ``dof_invweight0``,
        ``actuator_acc0``)."""
        model.body_mass[:] = self._mass * params.mass_scale
        model.body_inertia[:] = self._inertia * params.mass_scale  # same shape, denser material
        model.geom_friction[:] = self._friction
        model.geom_friction[:, 0] = self._friction[:, 0] * params.friction_scale
        model.dof_damping[:] = self._damping
        model.dof_damping[self.scene.dof_adr] = self._damping[self.scene.dof_adr] * params.damping_scale
        # position servo: force = kp (target - q) - kv qdot; gainprm[0] = kp, biasprm[1:3] = -kp, -kv
        model.actuator_gainprm[:] = self._gain
        model.actuator_biasprm[:] = self._bias
        model.actuator_gainprm[:, 0] *= params.gain_scale
        model.actuator_biasprm[:, 1] *= params.gain_scale
        model.actuator_biasprm[:, 2] *= np.sqrt(params.gain_scale)  # kv ~ sqrt(kp m): same ratio
        model.light_diffuse[:] = np.clip(self._light * params.light_scale, 0.0, 1.0)
        model.geom_rgba[:] = self._rgba
        if params.color_offset:
            model.geom_rgba[:, :3] = np.clip(self._rgba[:, :3] + np.array(params.color_offset), 0, 1)
        model.cam_pos[:] = self._cam_pos
        if params.camera_offset_m:
            model.cam_pos[:] += np.array(params.camera_offset_m)
        model.cam_quat[:] = self._cam_quat
        if params.camera_rot_rad:
            for i, rotvec in enumerate(np.array(params.camera_rot_rad)):
                dq = np.empty(4)
                mujoco.mju_axisAngle2Quat(dq, rotvec / max(np.linalg.norm(rotvec), 1e-12),
                                          np.linalg.norm(rotvec))
                q = np.empty(4)
                mujoco.mju_mulQuat(q, self._cam_quat[i], dq)  # rotate in the camera's own frame
                model.cam_quat[i] = q
        mujoco.mj_setConst(model, self._scratch)


class SignalPipes:
    """Sensing and actuation perturbations of N envs: action latency and noise, observation delay
    and noise, each env with its own parameters and noise generator.

    Args:
        num_envs: N.
        action_low, action_high: action limits ((A,), action units); noise is clipped to them and
            its std is ``action_noise`` x (high - low) / 2.
        state_dim: S, the observation size (17: the noise std follows ``STATE_NAMES``).
        max_latency, max_delay: the largest latency / delay any episode may draw (steps).

    Latency: the action applied at step t is the one given at step t - latency; before the first
    one arrives the arm holds (``actions`` returns NaN rows: the caller substitutes its hold
    action), as ``tether.robot.drivers.perturbed.PerturbedRobot`` does on a robot server.
    Delay: the observation at step t is the state of step t - delay (the initial state before).
    Noise is drawn from ``default_rng([episode seed, 2])``: action noise then observation noise
    each step, so an env's draws do not depend on the other envs in its batch.
    """

    def __init__(self, num_envs: int, action_low: np.ndarray, action_high: np.ndarray,
                 state_dim: int, max_latency: int, max_delay: int):
        self.n = num_envs
        self.low = np.asarray(action_low, np.float64)
        self.high = np.asarray(action_high, np.float64)
        self._half = (self.high - self.low) / 2
        self._actions = np.full((num_envs, max_latency + 1, len(self.low)), np.nan)
        self._states = np.zeros((num_envs, max_delay + 1, state_dim), np.float32)
        self.latency = np.zeros(num_envs, np.int64)
        self.delay = np.zeros(num_envs, np.int64)
        self.action_std = np.zeros((num_envs, len(self.low)))
        self.obs_std = np.zeros((num_envs, state_dim))
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._rows = np.arange(num_envs)

    def reset(self, i: int, params: EpisodeParams, state: np.ndarray) -> np.ndarray:
        """Start env ``i``'s episode with ``params`` from initial ``state`` ((S,) float32); returns
        its first observation (noisy; (S,) float32)."""
        if params.latency_steps >= self._actions.shape[1] or params.obs_delay_steps >= self._states.shape[1]:
            raise ValueError("latency or delay beyond the maximum these pipes were built for")
        self._rngs[i] = np.random.default_rng([params.seed, NOISE_STREAM])
        self.latency[i] = params.latency_steps
        self.delay[i] = params.obs_delay_steps
        self.action_std[i] = params.action_noise * self._half
        self.obs_std[i] = params.obs_noise_std()
        self._actions[i] = np.nan
        self._states[i] = state
        return self._noisy(i, state)

    def actions(self, actions: np.ndarray) -> np.ndarray:
        """Push this step's actions (N, A); returns the ones due now (N, A) float64, NaN rows
        where the arm must hold."""
        self._actions[:, 1:] = self._actions[:, :-1]
        self._actions[:, 0] = actions
        due = self._actions[self._rows, self.latency]
        for i in np.flatnonzero((self.action_std > 0).any(axis=1) & ~np.isnan(due[:, 0])):
            noisy = due[i] + self._rngs[i].normal(0.0, self.action_std[i])
            due[i] = np.minimum(np.maximum(noisy, self.low), self.high)
        return due

    def observations(self, states: np.ndarray) -> np.ndarray:
        """Push this step's true states (N, S); returns what the sensors report (N, S) float32."""
        self._states[:, 1:] = self._states[:, :-1]
        self._states[:, 0] = states
        obs = self._states[self._rows, self.delay]
        for i in np.flatnonzero((self.obs_std > 0).any(axis=1)):
            obs[i] = self._noisy(i, obs[i])
        return obs

    def _noisy(self, i: int, state: np.ndarray) -> np.ndarray:
        if not (self.obs_std[i] > 0).any():
            return state.copy()
        return (state + self._rngs[i].normal(0.0, self.obs_std[i])).astype(np.float32)
