"""The safety layer and the e-stop, on their own and inside a running server."""

import time

import numpy as np
import pytest

from tether.robot.client import RobotClient, RobotLinkError
from tether.robot.drivers.pointmass import PointMassRobot
from tether.robot.safety import SafetyFilter, SafetyViolation
from tether.robot.spec import Feature, RobotSpec, SafetySpec, SpecError


def spec(**safety):
    return RobotSpec(
        "arm", 100.0,
        {"observation.state": Feature("float32", (3,), ("ee_x", "ee_y", "ee_z"), "m")},
        Feature("float32", (3,), ("dx", "dy", "dz"), "m", low=(-1,) * 3, high=(1,) * 3),
        safety=SafetySpec(**safety),
    )


def test_check_rejects_with_a_reason():
    f = SafetyFilter(spec())
    for bad, reason in ((np.array([np.nan, 0, 0]), "non_finite"), (np.array([0, 2.0, 0]), "out_of_limits"),
                        (np.zeros(4), "bad_shape")):
        with pytest.raises(SafetyViolation):
            f.check(bad)
        assert f.counts[reason] == 1


def test_rate_limit_clips_the_change_per_tick():
    f = SafetyFilter(spec(max_delta_per_tick=(0.1, 0.1, 0.5)))
    out = f.limit(np.array([1.0, -1.0, 0.2], np.float32), np.zeros(3, np.float32), None)
    np.testing.assert_allclose(out, [0.1, -0.1, 0.2])
    assert f.counts["rate_limited"] == 1
    same = f.limit(np.array([0.05, 0, 0], np.float32), np.zeros(3, np.float32), None)
    np.testing.assert_allclose(same, [0.05, 0, 0])
    assert f.counts["rate_limited"] == 1


def test_workspace_blocks_motion_further_out_only():
    f = SafetyFilter(spec(workspace_low=(-0.5, -0.5, 0.0), workspace_high=(0.5, 0.5, 0.8),
                          ee_state_names=("ee_x", "ee_y", "ee_z"), ee_action_axes=(0, 1, 2)))
    obs = {"observation.state": np.array([0.6, 0.0, 0.0], np.float32)}  # outside on +x, at z floor
    out = f.limit(np.array([0.3, 0.2, -0.4], np.float32), None, obs)
    np.testing.assert_allclose(out, [0.0, 0.2, 0.0])  # no further +x, no further -z
    back = f.limit(np.array([-0.3, 0.0, 0.4], np.float32), None, obs)
    np.testing.assert_allclose(back, [-0.3, 0.0, 0.4])  # moving back in is allowed


def test_workspace_needs_the_end_effector_names():
    with pytest.raises(SpecError, match="ee_state_names"):
        SafetyFilter(spec(workspace_low=(0, 0, 0), workspace_high=(1, 1, 1), ee_state_names=("x", "y", "z"),
                          ee_action_axes=(0, 1, 2)))


def test_estop_latches_until_cleared(serve):
    robot = PointMassRobot(rate_hz=200.0)
    with serve(robot) as server:
        with RobotClient(server.address) as controller, RobotClient(server.address, role="observer") as panel:
            state = controller.reset("reach-origin", 0)
            controller.send_action(np.array([1.0, 1.0]), state["seq"])
            time.sleep(0.05)
            panel.estop("test button")
            events, latched = [], None
            deadline = time.monotonic() + 1
            while time.monotonic() < deadline and "estop" not in events:
                latched = controller.next_state()
                events += latched["events"]
            assert latched["estop"] and "estop" in events
            for _ in range(5):
                controller.send_action(np.array([1.0, 1.0]), controller.latest_state()["seq"])
            time.sleep(0.1)
            velocity = controller.latest_state()["observation"]["observation.state"][2:]
            assert np.all(np.abs(velocity) < 0.05)  # holding: the commands did not reach the robot
            with pytest.raises(RobotLinkError, match="e-stop is latched"):
                controller.reset("reach-origin", 1)
            panel.clear_estop()  # an observer cannot release it
            time.sleep(0.05)
            assert controller.latest_state()["estop"]
            controller.clear_estop()
            time.sleep(0.05)
            assert not controller.latest_state()["estop"]
            controller.reset("reach-origin", 1)
    assert server.stats.estops == 1 and server.stats.rejected["estop"] >= 5
    assert server.stats.rejected["not_a_controller"] == 1


def test_rate_limit_applies_inside_the_server(serve, commanded):
    robot = PointMassRobot(rate_hz=200.0)
    robot.spec = RobotSpec(robot.spec.robot_type, 200.0, robot.spec.observation, robot.spec.action,
                           robot.spec.tasks, SafetySpec(max_delta_per_tick=(0.1, 0.1)))
    with serve(robot) as server:
        with RobotClient(server.address) as client:
            state = client.reset("reach-origin", 0)  # the first command too: from hold_action()
            client.send_action(np.array([1.0, -1.0]), state["seq"])
            applied = commanded(client)["action"]
    np.testing.assert_allclose(applied, [0.1, -0.1])
    assert server.stats.clipped["rate_limited"] == 1


def test_velocity_limit_holds_at_the_rate_the_loop_runs():
    # 1 unit/s: 0.01 per tick at 100 Hz (the spec's rate), 0.02 per tick on a 50 Hz loop
    for period, step in ((None, 0.01), (0.02, 0.02)):
        f = SafetyFilter(spec(max_velocity=(1.0, 1.0, 1.0)), period_s=period)
        out = f.limit(np.array([0.5, -0.5, 0.005], np.float32), np.zeros(3, np.float32), None)
        np.testing.assert_allclose(out, [step, -step, 0.005], rtol=1e-6)
        assert f.counts["velocity_limited"] == 1
    # both limits apply: the tighter one wins on each element
    f = SafetyFilter(spec(max_delta_per_tick=(0.005, 1.0, 1.0), max_velocity=(1.0, 1.0, 1.0)))
    np.testing.assert_allclose(f.limit(np.ones(3, np.float32), np.zeros(3, np.float32), None), [0.005, 0.01, 0.01],
                               rtol=1e-6)
    assert f.counts["rate_limited"] == 1 and f.counts["velocity_limited"] == 1


def test_workspace_clips_absolute_targets_into_the_box():
    f = SafetyFilter(spec(workspace_low=(-0.5, -0.5, 0.0), workspace_high=(0.5, 0.5, 0.8),
                          ee_state_names=("ee_x", "ee_y", "ee_z"), ee_action_axes=(0, 1, 2),
                          ee_action_kind="absolute"))
    out = f.limit(np.array([0.9, 0.1, -0.2], np.float32), None, None)
    np.testing.assert_allclose(out, [0.5, 0.1, 0.0])
    assert f.counts["workspace_clipped"] == 1
    inside = np.array([0.2, -0.1, 0.4], np.float32)
    assert f.limit(inside, None, None) is inside


@pytest.mark.parametrize("safety, message", [
    (dict(max_velocity=(1.0, 1.0)), "max_velocity has 2 entries"),
    (dict(max_velocity=(-1.0, 1.0, 1.0)), "finite and >= 0"),
    (dict(ee_action_kind="joint"), "ee_action_kind"),
    (dict(workspace_low=(0, 0), workspace_high=(1, 1), ee_state_names=("ee_x", "ee_y"), ee_action_axes=(0, 5)),
     "one entry per axis"),
])
def test_safety_limits_that_do_not_fit_the_action_are_spec_errors(safety, message):
    with pytest.raises(SpecError, match=message):
        SafetyFilter(spec(**safety))
