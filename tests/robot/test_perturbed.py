"""The latency/noise wrapper that makes the simulator a stand-in for hardware."""

import numpy as np

from tether.robot.drivers.perturbed import PerturbedRobot
from tether.robot.drivers.pointmass import PointMassRobot


def test_latency_delays_every_action_by_k_ticks():
    robot = PerturbedRobot(PointMassRobot(rate_hz=100.0, time_constant_s=0.01), latency_ticks=3)
    robot.reset(None, 0)
    velocities = []
    for t in range(6):
        robot.act(np.array([1.0, 0.0], np.float32) if t == 0 else np.zeros(2, np.float32))
        velocities.append(robot.observe().values["observation.state"][2])
    # the command of tick 0 reaches the point mass at tick 3 (time constant = one tick)
    assert velocities[:3] == [0.0, 0.0, 0.0] and velocities[3] == 1.0 and velocities[4] == 0.0


def test_noise_has_the_requested_spread_and_respects_limits():
    inner = PointMassRobot(rate_hz=100.0, time_constant_s=0.01)
    robot = PerturbedRobot(inner, action_noise_std=0.2, obs_noise_std=0.01, seed=1)
    robot.reset(None, 0)
    applied, noise = [], []
    for _ in range(2000):
        robot.act(np.array([0.95, 0.0], np.float32))
        applied.append(inner.state[2:].copy())  # velocity = applied action (time constant 1 tick)
        noise.append(robot.observe().values["observation.state"][:2] - inner.state[:2])
    applied, noise = np.array(applied), np.array(noise)
    assert applied.max() <= 1.0 and abs(applied[:, 1].std() - 0.2) < 0.02
    assert abs(np.std(noise) - 0.01) < 0.001


def test_estop_empties_the_pipe():
    inner = PointMassRobot(rate_hz=100.0, time_constant_s=0.01)
    robot = PerturbedRobot(inner, latency_ticks=2)
    robot.reset(None, 0)
    robot.act(np.array([1.0, 1.0], np.float32))
    robot.estop()
    for _ in range(4):
        robot.hold()
    assert np.allclose(inner.state[2:], 0.0)  # the queued command never reached the robot
