"""Device axes -> robot actions through real robot specs (MetaWorld, point mass, DYNAMIXEL arm)."""

import numpy as np
import pytest

from tether.robot.drivers.dynamixel import DynamixelConfig
from tether.robot.drivers.pointmass import pointmass_spec
from tether.robot.spec import Feature, RobotSpec
from tether.robot.teleop import EVENTS, MappingError, TeleopCommand, TeleopConfig
from tether.robot.teleop.base import ButtonTracker
from tether.robot.teleop.config import TWIST_AXES
from tether.robot.teleop.mapping import ActionMapper, apply_deadzone, parse_axes
from tether.sim.metaworld import metaworld_spec

X = np.array([1.0, 0, 0, 0, 0, 0])


def arm_spec(names=("shoulder", "elbow", "wrist", "gripper")):
    cfg = DynamixelConfig(
        port="/dev/null", ids=tuple(range(1, len(names) + 1)), joint_names=names,
        low=(-1.0,) * (len(names) - 1) + (0.0,), high=(1.0,) * (len(names) - 1) + (0.8,),
    )  # fmt: skip
    return cfg.spec()


def joint_state(q, episode=0, estop=False):
    return {"observation": {"observation.state": np.asarray(q, np.float32)}, "episode": episode, "estop": estop}


def test_deadzone_zeroes_small_values_and_stays_continuous():
    out = apply_deadzone(np.array([0.05, -0.05, 0.1, 0.55, -1.0, 2.0]), 0.1)
    np.testing.assert_allclose(out, [0, 0, 0, 0.5, -1.0, 1.0], atol=1e-12)
    with pytest.raises(ValueError, match="deadzone"):
        apply_deadzone(np.zeros(1), 1.0)


def test_metaworld_end_effector_deltas_scale_and_gripper():
    mapper = ActionMapper(metaworld_spec(), TeleopConfig(translation_scale=0.5))
    assert mapper.mode == "ee"
    action = mapper.action(np.array([1.0, -0.5, 0.2, 0.9, 0, 0]), None, 0.01)
    assert action.dtype == np.float32 and action.shape == (4,)
    np.testing.assert_allclose(action, [0.5, -0.25, 0.1, -1.0])  # rotation ignored, gripper open
    mapper.gripper_closed = True
    assert mapper.action(np.zeros(6), None, 0.01)[3] == 1.0


def test_pointmass_velocities_in_m_per_s_within_limits():
    mapper = ActionMapper(pointmass_spec(), TeleopConfig(translation_scale=2.0))
    np.testing.assert_allclose(mapper.action(np.array([1.0, -0.25, 1, 0, 0, 0]), None, 0.01), [1.0, -0.5])


def test_axes_remap_inverts_and_applies_the_deadzone():
    config = TeleopConfig(axes=("-y", "x", "z", "roll", "pitch", "yaw"), deadzone=0.2)
    mapper = ActionMapper(pointmass_spec(), config)
    twist = mapper.shape_twist(np.array([0.1, 0.6, 0, 0, 0, 0]))  # device x in the deadzone
    np.testing.assert_allclose(twist[:2], [-0.5, 0.0])
    config = TeleopConfig(axes=("y", "x", "z", "roll", "pitch", "yaw"), invert=("x", "yaw"), deadzone=0.0)
    twist = ActionMapper(pointmass_spec(), config).shape_twist(np.array([0.1, 0.6, 0, 0, 0, 0.3]))
    np.testing.assert_allclose(twist, [-0.6, 0.1, 0, 0, 0, -0.3])
    with pytest.raises(MappingError, match="invert entry 'w'"):
        parse_axes(TWIST_AXES, ("w",))
    with pytest.raises(MappingError, match="not one of"):
        parse_axes(("x", "y", "z", "roll", "pitch", "spin"))


def test_six_dof_end_effector_action_with_rotation():
    spec = RobotSpec(
        "arm6", 20.0, {"observation.state": Feature("float32", (3,), ("x", "y", "z"), "m")},
        Feature("float32", (7,), ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"), "m|rad",
                low=(-0.01,) * 3 + (-0.1,) * 3 + (0.0,), high=(0.01,) * 3 + (0.1,) * 3 + (1.0,)),
    )  # fmt: skip
    mapper = ActionMapper(spec, TeleopConfig(translation_scale=1.0, rotation_scale=0.5))
    action = mapper.action(np.array([1, 0, -1, 0, 1, -1.0]), None, 0.05)
    np.testing.assert_allclose(action, [0.01, 0, -0.01, 0, 0.05, -0.05, 0.0], atol=1e-7)


def test_joint_mode_integrates_from_the_measured_pose_within_lead_and_limits():
    spec = arm_spec()
    mapper = ActionMapper(spec, TeleopConfig(joint_speed=1.0, joint_max_lead=0.15))
    assert mapper.mode == "joint"  # names are not end-effector axes
    q = [0.2, 0.0, 0.95, 0.3]
    a1 = mapper.action(np.array([1.0, -1.0, 1.0, 0, 0, 0]), joint_state(q), 0.05)
    np.testing.assert_allclose(a1, [0.25, -0.05, 1.0, 0.0], atol=1e-6)  # wrist at its limit, gripper open
    # The arm does not follow (blocked): the target runs at most joint_max_lead ahead.
    for _ in range(10):
        a = mapper.action(np.array([1.0, 0, 0, 0, 0, 0]), joint_state(q), 0.05)
    assert a[0] == pytest.approx(0.35, abs=1e-6)
    # No input: the target stays (it does not sag back onto the measured pose).
    a = mapper.action(np.zeros(6), joint_state([0.3, 0.0, 0.95, 0.3]), 0.05)
    assert a[0] == pytest.approx(0.35, abs=1e-6)
    mapper.gripper_closed = True
    assert mapper.action(np.zeros(6), joint_state(q), 0.05)[3] == pytest.approx(0.8)
    # A new episode re-anchors on the measured pose; so does an e-stop.
    assert mapper.action(np.zeros(6), joint_state([0.0] * 4, episode=1), 0.05)[0] == 0.0
    assert mapper.action(np.zeros(6), joint_state([-0.5] * 4, episode=1, estop=True), 0.05)[0] == -0.5
    # A stalled loop (dt of seconds) is capped to one step of 0.1 s.
    assert mapper.action(X, joint_state([0.0] * 4, episode=2), 5.0)[0] == pytest.approx(0.1)
    assert mapper.action(X, joint_state([0.0] * 4, episode=2), 5.0)[0] == pytest.approx(0.15)


def test_joint_banks_drive_the_next_six_joints():
    names = tuple(f"j{i}" for i in range(8)) + ("gripper",)
    mapper = ActionMapper(arm_spec(names), TeleopConfig(joint_speed=1.0))
    assert mapper.driven_joints() == [0, 1, 2, 3, 4, 5]
    mapper.next_bank()
    assert mapper.driven_joints() == [6, 7]
    a = mapper.action(np.array([1.0, 1.0, 1.0, 0, 0, 0]), joint_state([0.0] * 9), 0.1)
    np.testing.assert_allclose(a[:8], [0] * 6 + [0.1, 0.1], atol=1e-6)
    mapper.next_bank()
    assert mapper.driven_joints()[0] == 0
    explicit = ActionMapper(arm_spec(names), TeleopConfig(joint_axes=(7, 2)))
    assert explicit.driven_joints() == [7, 2]


def test_unmappable_specs_raise_with_the_reasons():
    spec = RobotSpec(
        "odd", 10.0, {"observation.state": Feature("float32", (2,), ("a", "b"), "m")},
        Feature("float32", (2,), ("torque_1", "torque_2"), "N*m"),
    )  # fmt: skip
    with pytest.raises(MappingError, match=r"end-effector mode: .*torque_1.*joint mode: .*not in observation.state"):
        ActionMapper(spec, TeleopConfig())
    with pytest.raises(MappingError, match="rate, not joint positions"):
        ActionMapper(pointmass_spec(), TeleopConfig(mode="joint"))
    with pytest.raises(MappingError, match="end-effector mode"):
        ActionMapper(arm_spec(), TeleopConfig(mode="ee"))
    mapper = ActionMapper(arm_spec(), TeleopConfig())
    with pytest.raises(MappingError, match="observation.state"):
        mapper.action(np.zeros(6), {"observation": {}}, 0.1)


def test_buttons_fire_events_once_per_press_and_intervention_modes():
    hold = ButtonTracker("hold")
    assert hold.update({"end_episode", "intervention"}) == ["intervention", "end_episode"]
    assert hold.intervention
    assert hold.update({"end_episode", "intervention"}) == []  # held: no repeat
    assert hold.update(set()) == [] and not hold.intervention
    assert hold.update(set(), tapped={"estop"}) == ["estop"]
    toggle = ButtonTracker("toggle")
    toggle.update({"intervention"})
    toggle.update(set())
    assert toggle.intervention
    toggle.update({"intervention"})
    assert not toggle.intervention
    with pytest.raises(ValueError, match="unknown buttons"):
        toggle.update({"turbo"})


def test_command_rejects_events_outside_the_vocabulary():
    assert set(EVENTS) >= {"end_episode", "rerecord", "stop", "estop"}
    with pytest.raises(ValueError, match="unknown teleop events"):
        TeleopCommand(np.zeros(2, np.float32), events=("pause",))
