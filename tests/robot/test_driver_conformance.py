"""Driver conformance: every hardware driver, run through its maker's real SDK against a protocol
peer (a byte-level emulator of the robot's bus or network protocol), must behave the same way
towards the robot server: a spec that describes it, no jump at connect, commands that reach the
robot, the safety layer's refusals and clips, the watchdog and e-stop holding it, torque released
or kept at disconnect as configured, and bus faults raised as the driver's own error naming the
part that failed.

Adding a driver: write a fixture ``<name>_rig`` that yields an object with the ``Rig`` attributes
below, and add ``"<name>"`` to ``DRIVERS``. A rig whose peer cannot inject a fault leaves its name
out of ``faults``; those tests skip for it. The Franka runs through franky (libfranka) against
franky-sim, a simulator of libfranka's network protocol, in a process of its own
(``tether.robot.drivers.emulators.franka``).
"""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np
import pytest

from tether.robot.client import RobotClient
from tether.robot.driver import Robot
from tether.robot.spec import RobotSpec

DRIVERS = ["dynamixel", "feetech", "franka"]


class Rig(Protocol):
    """A driver and its protocol peer, as the conformance tests use them.

    Attributes:
        error: the driver's error class (its bus / link faults).
        faults: which faults the peer injects: ``"drop"`` (one actuator stops answering),
            ``"vanish"`` (the link to the robot disappears).
        releases: the driver can release the robot at disconnect (servo torque off); a Franka
            cannot (its brakes close from Desk), so ``torque_off_on_disconnect`` is ignored.
    """

    error: type[Exception]
    faults: set[str]
    releases: bool

    def make(self, **overrides) -> Robot:
        """A driver for the peer (not connected); ``overrides`` set config fields:
        ``torque_off_on_disconnect`` (bool), ``max_velocity_rad_s`` and ``rate_hz``."""

    def unreachable(self) -> Robot:
        """A driver for a robot that is not there (a port or host that does not exist)."""

    def commanded(self) -> np.ndarray:
        """The action (the spec's units) the peer last received as its target."""

    def holding(self) -> list[bool]:
        """Per actuator: powered and holding its target (torque on / brakes released)."""

    def drop(self) -> str:
        """Make one actuator stop answering; returns a regex the driver's error must match."""

    def vanish(self) -> str:
        """Make the link vanish; returns a regex the driver's error must match."""


def wait_for(condition, timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.002)
    return condition()


# ---------------------------------------------------------------------------------- the rigs
class _ServoRig:
    """A servo arm driver against a pty servo-bus emulator; the subclasses say which."""

    def __init__(self, bus, tmp_path):
        self.bus, self.tmp_path = bus, tmp_path
        self.calibration = tmp_path / f"{self.kind}_calib.json"
        self.calibrate().save(self.calibration)
        self.faults = {"drop", "vanish"}
        self.releases = True

    def make(self, **overrides) -> Robot:
        settings = dict(port=self.bus.port, ids=self.ids, calibration=str(self.calibration),
                        max_velocity_rad_s=2.0, rate_hz=50.0)
        return self.arm(self.config(**{**settings, **overrides}))

    def unreachable(self) -> Robot:
        return self.arm(self.config(port="/dev/does-not-exist", ids=self.ids, calibration=str(self.calibration)))

    def drop(self) -> str:
        self.bus.remove(self.ids[1])
        return rf"servo {self.ids[1]} .*(does not answer|no status packet)"

    def vanish(self) -> str:
        self.bus.vanish()
        return f"{self.bus.port} vanished"


class DynamixelRig(_ServoRig):
    kind, ids = "dynamixel", (1, 2, 3)

    def __init__(self, tmp_path):
        from tether.robot.drivers.dynamixel import DynamixelArm, DynamixelConfig, DynamixelError
        from tether.robot.drivers.emulators.dynamixel import ServoChain

        self.arm, self.config, self.error = DynamixelArm, DynamixelConfig, DynamixelError
        super().__init__(ServoChain(self.ids, start_ticks=1500).__enter__(), tmp_path)

    def calibrate(self):
        from tether.robot.drivers.emulators.dynamixel import zero_pose_calibration

        return zero_pose_calibration(self.bus, tuple(f"joint_{i}" for i in self.ids))

    def commanded(self) -> np.ndarray:
        from tether.robot.drivers.servo_arm import to_radians

        return to_radians(self.bus.ticks(116))

    def holding(self) -> list[bool]:
        return [self.bus.torque(i) for i in self.ids]


class FeetechRig(_ServoRig):
    kind, ids = "feetech", (1, 2, 3, 4, 5, 6)

    def __init__(self, tmp_path):
        from tether.robot.drivers.emulators.sts import STSBus
        from tether.robot.drivers.feetech import FeetechArm, FeetechConfig, FeetechError

        self.arm, self.config, self.error = FeetechArm, FeetechConfig, FeetechError
        super().__init__(STSBus(self.ids, start_ticks=(3000, 1000, 2048, 500, 3500, 2100)).__enter__(), tmp_path)

    def calibrate(self):
        from tether.robot.drivers.emulators.sts import zero_pose_calibration
        from tether.robot.drivers.feetech import SO101_JOINTS

        return zero_pose_calibration(self.bus, SO101_JOINTS)

    def commanded(self) -> np.ndarray:
        from tether.robot.drivers.servo_arm import to_radians

        return to_radians([self.bus.goal(i) for i in self.ids])

    def holding(self) -> list[bool]:
        return [self.bus.torque(i) for i in self.ids]


class FrankaRig:
    """The Franka driver (joint positions, franky) against franky-sim in its own process."""

    faults = {"vanish"}
    releases = False

    def __init__(self, peer_holder):
        from tether.robot.drivers.franka import FrankaArm, FrankaConfig, FrankaError

        self.holder = peer_holder
        self.peer = peer_holder.get()
        self.arm, self.config, self.error = FrankaArm, FrankaConfig, FrankaError

    def make(self, **overrides) -> Robot:
        overrides.pop("torque_off_on_disconnect", None)  # a Franka holds its pose; brakes are Desk's
        settings = dict(host=self.peer.hostname, realtime=False, home=None, max_velocity_rad_s=2.0,
                        rate_hz=50.0, relative_dynamics_factor=0.5)
        return self.arm(self.config(**{**settings, **overrides}))

    def unreachable(self) -> Robot:
        return self.arm(self.config(host="127.254.254.254", realtime=False))  # nothing listens there

    def commanded(self) -> np.ndarray:
        return np.asarray(self.peer.state()["q_d"])  # libfranka's desired joint positions

    def holding(self) -> list[bool]:
        mode = self.peer.state()["robot_mode"]
        return [mode in (1, 2)] * 7  # Idle or Move: the controller holds the arm; not Reflex

    def vanish(self) -> str:
        self.peer.vanish()
        self.holder.stale = True  # replaced at the next test (closing it now would close the link)
        time.sleep(0.5)  # past the driver's link_timeout_s (0.2 s), or libfranka sees the RST first
        return "lost the link to the Franka at .*(TCP connection|Connection reset|no new robot state|robot's clock advanced|UDP receive)"


class _PeerHolder:
    """One franky-sim for the module (it takes 2-3 s to start), restarted after a test vanished it."""

    def __init__(self):
        self.peer = None
        self.stale = False

    def get(self):
        if self.stale:
            self.discard()
        if self.peer is None:
            from tether.robot.drivers.emulators.franka import FrankaPeer

            self.peer = FrankaPeer().start()
        return self.peer

    def discard(self):
        peer, self.peer, self.stale = self.peer, None, False
        if peer is not None:
            peer.close()


@pytest.fixture(scope="module")
def franka_peers():
    pytest.importorskip("franky", reason="install tether[franka]")
    pytest.importorskip("franky_sim", reason="install tether[franka-sim]")
    holder = _PeerHolder()
    yield holder
    holder.discard()


@pytest.fixture
def franka_rig(franka_peers):
    return FrankaRig(franka_peers)


@pytest.fixture
def dynamixel_rig(tmp_path):
    pytest.importorskip("dynamixel_sdk", reason="install tether[dynamixel]")
    rig = DynamixelRig(tmp_path)
    yield rig
    rig.bus.close()


@pytest.fixture
def feetech_rig(tmp_path):
    pytest.importorskip("scservo_sdk", reason="install tether[feetech]")
    rig = FeetechRig(tmp_path)
    yield rig
    rig.bus.close()


@pytest.fixture(params=DRIVERS)
def rig(request) -> Rig:
    return request.getfixturevalue(f"{request.param}_rig")


@pytest.fixture
def connected(rig):
    robot = rig.make()
    robot.connect()
    yield robot
    robot.disconnect()


def a_step(robot: Robot, size: float = 0.02) -> np.ndarray:
    """An action a small step from where the robot holds, inside its limits."""
    hold = robot.hold_action()
    low, high = np.asarray(robot.spec.action.low), np.asarray(robot.spec.action.high)
    return np.clip(hold + size * np.where(np.arange(hold.size) % 2, -1, 1), low, high).astype(hold.dtype)


def per_tick_bound(spec: RobotSpec) -> np.ndarray:
    """The largest change of the action in one tick at the spec's rate that the safety layer
    lets through (``max_delta_per_tick`` and ``max_velocity`` x period, whichever is smaller)."""
    bound = np.full(spec.action.shape, np.inf)
    if spec.safety.max_delta_per_tick is not None:
        bound = np.minimum(bound, spec.safety.max_delta_per_tick)
    if spec.safety.max_velocity is not None:
        bound = np.minimum(bound, np.asarray(spec.safety.max_velocity) * spec.period_s)
    return bound


# ---------------------------------------------------------------------------------- the suite
def test_the_spec_names_units_limits_and_rate(rig):
    spec = rig.make().spec
    state, action = spec.observation["observation.state"], spec.action
    assert state.names and state.unit and state.dtype == "float32"
    assert action.names and len(action.names) == action.shape[0] and action.unit
    low, high = np.asarray(action.low), np.asarray(action.high)
    assert np.isfinite(low).all() and np.isfinite(high).all() and (low < high).all()
    assert spec.control_rate_hz > 0
    assert spec.safety.max_velocity is not None or spec.safety.max_delta_per_tick is not None


def test_connect_holds_where_the_robot_is_and_reset_observes_it(rig, connected):
    hold = connected.hold_action()
    assert hold.shape == connected.spec.action.shape
    np.testing.assert_allclose(rig.commanded(), hold, atol=2e-3)  # no jump when it is powered
    assert all(rig.holding())
    obs = connected.reset(None, None)
    for key, feature in connected.spec.observation.items():
        feature.validate(key, obs.values[key])
    with pytest.raises(ValueError, match="seed must be"):
        connected.reset(None, -1)


def test_an_action_reaches_the_robot_and_the_robot_follows(rig, connected):
    connected.reset(None, None)
    target = a_step(connected)
    connected.act(target)
    assert wait_for(lambda: np.allclose(rig.commanded(), target, atol=2e-3))
    assert wait_for(lambda: np.allclose(connected.observe().values["observation.state"], target, atol=5e-3))
    np.testing.assert_allclose(connected.hold(), target, atol=1e-6)
    np.testing.assert_allclose(rig.commanded(), target, atol=2e-3)


def test_the_safety_layer_refuses_out_of_limits_and_clips_big_steps(rig, serve, commanded):
    robot = rig.make()
    step = per_tick_bound(robot.spec)
    with serve(robot) as server, RobotClient(server.address) as client:
        state = client.reset(None, None)
        start = robot.hold_action()
        beyond = np.asarray(robot.spec.action.high) + 0.1
        client.send_action(beyond.astype(np.float32), state["seq"])
        time.sleep(0.1)
        np.testing.assert_allclose(rig.commanded(), start, atol=2e-3)  # refused: never reached the robot
        far = np.clip(start + 0.5, robot.spec.action.low, robot.spec.action.high).astype(np.float32)
        client.send_action(far, client.latest_state()["seq"])
        applied = np.asarray(commanded(client)["action"])
        np.testing.assert_allclose(applied, start + np.minimum(step, far - start), atol=1e-5)
        assert wait_for(lambda: np.allclose(rig.commanded(), applied, atol=2e-3))
    assert server.stats.rejected["invalid_action"] == 1 and server.stats.clipped["velocity_limited"] >= 1


def test_the_watchdog_and_the_estop_hold_the_robot(rig, serve, commanded):
    robot = rig.make()
    with serve(robot, watchdog_s=0.2) as server, RobotClient(server.address) as client:
        state = client.reset(None, None)
        client.send_action(a_step(robot, 0.01), state["seq"])
        held = np.asarray(commanded(client)["action"])
        time.sleep(0.5)  # the client goes silent
        assert server.stats.watchdog_trips == 1 and all(rig.holding())
        np.testing.assert_allclose(rig.commanded(), held, atol=2e-3)
        client.estop("conformance")
        time.sleep(0.1)
        client.send_action(a_step(robot, 0.03), client.latest_state()["seq"])
        time.sleep(0.1)
        assert client.latest_state()["estop"] and all(rig.holding())
        np.testing.assert_allclose(rig.commanded(), held, atol=3e-3)  # stopped where it was
    assert server.stats.rejected["estop"] >= 1


@pytest.mark.parametrize("release", [True, False])
def test_disconnect_releases_or_holds_as_configured(rig, release):
    if release and not rig.releases:
        pytest.skip("the driver cannot release its robot at disconnect")
    robot = rig.make(torque_off_on_disconnect=release)
    robot.connect()
    assert all(rig.holding())
    robot.disconnect()
    assert rig.holding() == [not release] * len(rig.holding())


def test_a_robot_that_is_not_there_is_named(rig):
    robot = rig.unreachable()
    with pytest.raises(rig.error, match="cannot open|cannot reach|cannot connect"):
        robot.connect()


def test_an_actuator_that_stops_answering_is_named(rig):
    if "drop" not in rig.faults:
        pytest.skip("the peer cannot drop an actuator")
    robot = rig.make()
    robot.connect()
    try:
        pattern = rig.drop()
        with pytest.raises(rig.error, match=pattern):
            robot.observe()
    finally:
        robot.disconnect()
    with pytest.raises(rig.error, match=pattern):
        rig.make().connect()  # and at connect, before anything is powered


def test_a_vanished_link_is_named_and_disconnect_still_returns(rig):
    if "vanish" not in rig.faults:
        pytest.skip("the peer cannot vanish")
    robot = rig.make(torque_off_on_disconnect=True)
    robot.connect()
    robot.reset(None, None)
    pattern = rig.vanish()
    with pytest.raises(rig.error, match=pattern):
        robot.act(a_step(robot))
        robot.observe()
    robot.disconnect()
