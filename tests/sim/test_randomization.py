"""Domain randomization of the arm: configs and presets, ranges respected, per-episode logging,
the model written from nominal (never compounding), signal pipes, the reality-gap robot."""

import json
from dataclasses import asdict, fields

import mujoco
import numpy as np
import pytest

from tether.robot.drivers.arm import ArmRobot
from tether.sim import arm
from tether.sim.randomization import (
    PRESETS, EpisodeParams, ModelRandomizer, PhysicsRanges, RandomizationConfig, SignalPipes,
    UnknownPresetError, resolve, sample,
)


@pytest.fixture(scope="module")
def scene():
    return arm.Scene.load()


def ranges(config):
    """name -> (low, high) of every ranged parameter of ``config``."""
    out = {}
    for group in (config.physics, config.sensing, config.actuation, config.visual):
        for f in fields(group):
            value = getattr(group, f.name)
            if isinstance(value, tuple):
                out[f.name] = value
    return out


def test_presets_resolve_and_json_round_trips(tmp_path):
    assert resolve(None) is PRESETS["none"] and resolve("default") is PRESETS["default"]
    assert PRESETS["none"].is_nominal and not PRESETS["none"].randomizes_model
    assert PRESETS["default"].randomizes_model and not PRESETS["default"].is_nominal
    path = tmp_path / "dr.json"
    path.write_text(json.dumps(PRESETS["default"].to_dict()))
    assert resolve(path) == PRESETS["default"]
    with pytest.raises(UnknownPresetError, match="reality_gap"):
        resolve("realty_gap")
    with pytest.raises(ValueError, match="low 2.0 > high 1.0"):
        RandomizationConfig(physics=PhysicsRanges(mass_scale=(2.0, 1.0)))
    with pytest.raises(ValueError, match="positive"):
        RandomizationConfig(physics=PhysicsRanges(gain_scale=(0.0, 1.0)))
    with pytest.raises(ValueError, match="unknown physics"):
        RandomizationConfig.from_dict({"physics": {"mass": [1, 2]}})


def test_samples_stay_in_their_ranges_and_seeds_name_them(scene):
    config = PRESETS["default"]
    m = scene.model
    draws = [sample(config, seed, m.ngeom, m.ncam) for seed in range(300)]
    for name, (low, high) in ranges(config).items():
        values = np.array([getattr(d, name) for d in draws])
        assert values.min() >= low and values.max() <= high, name
        if isinstance(low, int):  # integers: both ends drawn (inclusive)
            assert set(values) == set(range(low, high + 1)), name
        else:  # the draws spread over the range
            assert values.max() - values.min() > 0.8 * (high - low), name
    colors = np.array([d.color_offset for d in draws])
    assert colors.shape == (300, m.ngeom, 3) and np.abs(colors).max() <= config.visual.color_jitter
    assert np.array(draws[0].camera_offset_m).shape == (m.ncam, 3)
    assert sample(config, 7, m.ngeom, m.ncam) == draws[7]
    assert draws[7] != draws[8]
    # JSON-ready for the per-episode log
    assert json.loads(json.dumps(draws[3].to_dict()))["mass_scale"] == draws[3].mass_scale
    assert sample(PRESETS["none"], 5) == EpisodeParams(5)


def test_reality_gap_is_one_fixed_robot_away_from_nominal(scene):
    gap = [asdict(sample(PRESETS["reality_gap"], seed)) for seed in (1, 2, 99)]
    for d in gap:
        d.pop("seed")
    assert gap[0] == gap[1] == gap[2]
    assert gap[0]["latency_steps"] == 2 and gap[0]["gain_scale"] == 0.7
    assert gap[0]["mass_scale"] != 1.0 and gap[0]["obs_noise_position"] > 0


def test_model_is_written_from_nominal_and_restores_exactly(scene):
    randomizer = ModelRandomizer(scene)
    model = randomizer.make_model()
    params = sample(PRESETS["default"], 3, model.ngeom, model.ncam)
    for _ in range(2):  # applying twice must not compound
        randomizer.apply(model, params)
    nominal = scene.model
    np.testing.assert_allclose(model.body_mass, nominal.body_mass * params.mass_scale)
    dof = scene.dof_adr
    np.testing.assert_allclose(model.dof_damping[dof], nominal.dof_damping[dof] * params.damping_scale)
    np.testing.assert_allclose(model.actuator_gainprm[:, 0], 40 * params.gain_scale)
    np.testing.assert_allclose(model.actuator_biasprm[:, 1], -40 * params.gain_scale)
    np.testing.assert_allclose(model.geom_friction[:, 0], nominal.geom_friction[:, 0] * params.friction_scale)
    assert not np.allclose(model.cam_quat, nominal.cam_quat)
    np.testing.assert_allclose(np.linalg.norm(model.cam_quat, axis=1), 1.0)
    # subtree masses follow the new masses (mj_setConst ran)
    assert model.body_subtreemass[0] == pytest.approx(nominal.body_subtreemass[0] * params.mass_scale)
    randomizer.apply(model, sample(PRESETS["none"], 0))
    for name in ("body_mass", "body_inertia", "geom_friction", "dof_damping", "actuator_gainprm",
                 "actuator_biasprm", "geom_rgba", "cam_pos", "cam_quat", "light_diffuse",
                 "body_subtreemass", "dof_invweight0"):
        np.testing.assert_array_equal(getattr(model, name), getattr(nominal, name), err_msg=name)
    # the shared model is never written
    assert scene.model.body_mass[2] == pytest.approx(0.139)


def test_heavier_softer_arm_sags_more(scene):
    """Physics parameters reach the simulation: at 0.5 kp the arm sags further under gravity."""
    randomizer = ModelRandomizer(scene)
    sag = []
    for gain in (1.0, 0.5):
        model = randomizer.make_model()
        randomizer.apply(model, EpisodeParams(0, gain_scale=gain))
        data = mujoco.MjData(model)
        arm.reset(scene, data, "reach", np.random.default_rng(0))
        mujoco.mj_step(model, data, nstep=200)
        sag.append(np.abs(data.qpos[scene.qpos_adr] - data.ctrl[:4]).max())
    assert sag[1] > 1.5 * sag[0]


def test_pipes_delay_actions_and_observations():
    pipes = SignalPipes(2, -np.ones(1), np.ones(1), 17, max_latency=3, max_delay=2)
    pipes.reset(0, EpisodeParams(0, latency_steps=2, obs_delay_steps=1), np.zeros(17, np.float32))
    pipes.reset(1, EpisodeParams(1), np.zeros(17, np.float32))
    out, obs = [], []
    for t in range(1, 5):
        out.append(pipes.actions(np.array([[0.1 * t], [0.1 * t]])))
        obs.append(pipes.observations(np.full((2, 17), t, np.float32)))
    out, obs = np.array(out), np.array(obs)
    assert np.isnan(out[:2, 0]).all() and np.allclose(out[2:, 0, 0], [0.1, 0.2])  # 2 steps late
    assert np.allclose(out[:, 1, 0], [0.1, 0.2, 0.3, 0.4])  # no latency
    assert np.allclose(obs[:, 0, 0], [0, 1, 2, 3]) and np.allclose(obs[:, 1, 0], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="beyond the maximum"):
        pipes.reset(0, EpisodeParams(0, latency_steps=4), np.zeros(17, np.float32))


def test_reality_gap_robot_is_deterministic_and_differs_from_nominal():
    def episode(randomize, seed=4):
        robot = ArmRobot(("reach",), randomize=randomize)
        robot.connect()
        obs = robot.reset("reach", seed)
        trace, expert = [obs.values["observation.state"]], arm.expert_policy("reach")
        for _ in range(30):
            robot.act(expert(trace[-1]))
            trace.append(robot.observe().values["observation.state"])
        robot.disconnect()
        return np.array(trace), obs.info

    a, info = episode("reality_gap")
    b, _ = episode("reality_gap")
    nominal, nominal_info = episode(None)
    np.testing.assert_array_equal(a, b)
    assert info["randomization.latency_steps"] == 2 and info["randomization.seed"] == 4
    assert nominal_info == {}
    # the true initial conditions are the same; the sensed positions differ by the noise (mm)
    positions = np.r_[0:4, 8:17]
    assert np.abs(a[0, positions] - nominal[0, positions]).max() < 0.03
    assert not np.array_equal(a[0], nominal[0])
    # latency: the gap robot is still near its start after two commanded steps, nominal moved
    assert np.abs(a[2, 8:11] - a[0, 8:11]).max() < np.abs(nominal[2, 8:11] - nominal[0, 8:11]).max()


def test_serve_takes_randomize_for_the_arm_only():
    from tether.launch import UsageError
    from tether.launch.serve import ServeConfig, make_robot

    robot = make_robot(ServeConfig(robot="arm", tasks=("reach",), randomize="reality_gap"))
    assert robot.randomization is PRESETS["reality_gap"]
    with pytest.raises(UsageError, match="--robot arm"):
        make_robot(ServeConfig(robot="pointmass", randomize="default"))
    with pytest.raises(UsageError, match="unknown randomization"):
        make_robot(ServeConfig(robot="arm", randomize="nope"))
