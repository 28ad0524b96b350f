"""Hardware driver for Franka Research 3 (FR3) and Panda arms through franky (``pip install
'tether[franka]'``, PyPI ``franky-control``, import ``franky``: Tim Schneider's Python API over
libfranka, with Ruckig trajectories and motions that take over from each other while they run).

libfranka closes the robot's loop at 1 kHz in a real-time thread of its own; tether's control rate
(``rate_hz``, 100 Hz by default, at most 1 kHz) is the rate at which the robot server hands franky
a new target, and franky's motion generator reaches each one within the arm's velocity,
acceleration and jerk limits (scaled by ``relative_dynamics_factor``), so the 1 kHz command
stream libfranka sends stays smooth whatever tether's rate.

Actions (``action``):
    ``joint``: 7 goal joint positions (rad), bounded by the model's joint limits (or the config's
        narrower ``low`` / ``high``); the safety layer bounds their speed to
        ``max_velocity_rad_s``. Each one is a ``franky.JointMotion`` that keeps holding its
        target (``return_when_finished=False``): a server that stops sending leaves the arm
        holding the last target.
    ``cartesian_velocity``: the end effector's twist in the base frame, ``vx, vy, vz`` (m/s) and
        ``wx, wy, wz`` (rad/s), bounded by ``max_linear_m_s`` / ``max_angular_rad_s``; the
        safety layer bounds its change per tick (``max_linear_accel_m_s2`` /
        ``max_angular_accel_rad_s2`` x period) and zeroes a linear velocity that would leave the
        ``workspace_low`` / ``workspace_high`` box. Each is a ``franky.CartesianVelocityMotion``
        held for ``velocity_hold_ticks`` periods: a server that stops sending leaves the arm
        braking to rest.
Observations: ``observation.state`` (joint positions, rad; in ``cartesian_velocity`` mode followed
by the end effector's x, y, z in m, which the workspace check reads) and ``observation.ee_pose``
(the end effector's x, y, z in m and orientation quaternion x, y, z, w in the base frame).

Errors. A reflex (the FR3 stopped itself: a collision, a joint or Cartesian limit, a command
discontinuity; libfranka's ``ControlException``) raises ``FrankaReflexError`` (a
``tether.robot.driver.RobotFault``) naming libfranka's error flags: the robot server ends the
episode, publishes the message in that tick's events and runs on; the next ``reset`` runs
libfranka's automatic error recovery (if that is refused, e.g. the user stop is pressed or the
fault needs a person, the reset raises ``FrankaError`` saying so and is refused). A lost link
(no new robot state for ``link_timeout_s``, or libfranka's ``NetworkException``) and a robot that
cannot be reached
raise ``FrankaError``, after which ``tether serve`` stops; the FR3 itself stops on a broken link
(a ``communication_constraints_violation`` reflex). libfranka's blocking commands (connect,
collision thresholds, error recovery, the move home) wait for the Control's answer with no
timeout, so each runs in a thread of its own and a Control that has not answered within
``command_timeout_s`` (``home_timeout_s`` for the move home) is a lost link too: a hung Control
never hangs the server (the waiting thread ends when the connection does). A robot object whose
link is lost is never destroyed (see ``_never_destroyed``). ``estop`` decelerates to rest along
the path (franky's stop motion; the robot's own stop button is the hardware e-stop). A commanded action
outside the spec's limits raises ``FrankaError`` before anything is sent (the robot server's
safety layer refuses such commands before they reach the driver).

Disconnect stops any motion; the arm then holds its pose under its own controller (brakes are
closed from Franka Desk, which this driver does not drive).

Set-up: unlock the joints and activate FCI in Franka Desk; connect this computer to the robot's
control box (the LAN port of the Control, not the arm base) on a wired link; run a real-time
(PREEMPT_RT) kernel (libfranka needs it for 1 kHz; ``realtime: false`` allows a normal kernel for
tests and simulators). The libfranka inside ``franky-control`` must speak the robot's server
version (franky-control 2.0 speaks version 10); a mismatch is refused at connect with
libfranka's message.

Limits: Franka's "Robot and interface specifications" (FR3 and Panda joint position and velocity
limits, the values below).
"""

from __future__ import annotations

import ctypes
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from tether.robot.driver import Observation, Robot, RobotFault, check_reset_args
from tether.robot.spec import Feature, RobotSpec, SafetySpec

log = logging.getLogger(__name__)

JOINT_NAMES = tuple(f"joint_{i}" for i in range(1, 8))
TWIST_NAMES = ("vx", "vy", "vz", "wx", "wy", "wz")
EE_POSE_NAMES = ("ee_x", "ee_y", "ee_z", "ee_qx", "ee_qy", "ee_qz", "ee_qw")
# Franka's specifications: joint position limits (rad) and joint velocity limits (rad/s).
MODELS = {
    "fr3": {
        "low": (-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159),
        "high": (2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159),
        "velocity": (2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26),
    },
    "panda": {
        "low": (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973),
        "high": (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973),
        "velocity": (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61),
    },
}
READY_POSE = (0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4)  # Franka's "ready"
MAX_RATE_HZ = 1000.0  # libfranka's own loop: a faster tether loop would only repeat targets


class FrankaError(ConnectionError):
    """The Franka could not be reached or driven: not there, the link lost, a version or
    real-time problem, a recovery that needs a person, or a command outside the limits."""


class FrankaReflexError(RobotFault):
    """The FR3 stopped itself (a reflex); ``reasons`` are libfranka's error flags (e.g.
    ``joint_position_limits_violation``, ``cartesian_reflex``). The next reset recovers."""

    def __init__(self, message: str, reasons: tuple[str, ...] = ()):
        super().__init__(message)
        self.reasons = reasons


@dataclass
class FrankaConfig:
    """A Franka arm behind FCI.

    Attributes:
        host: the robot's FCI address (the Control's IP, e.g. ``172.16.0.2``).
        action: ``joint`` (goal joint positions, rad) or ``cartesian_velocity`` (twist, m/s and
            rad/s); see the module docstring.
        model: ``fr3`` or ``panda``: the joint limits the spec starts from.
        rate_hz: tether's control rate (Hz), at most 1000.
        low, high: joint limits (rad); default the model's; each must lie within the model's.
        home: joint positions (rad) a reset moves to (default: Franka's ready pose; None: stay).
        max_velocity_rad_s: joint speed (rad/s) the safety layer lets a joint target ask for,
            one value or one per joint, at most the model's.
        max_linear_m_s, max_angular_rad_s: the twist's bounds (``cartesian_velocity``).
        max_linear_accel_m_s2, max_angular_accel_rad_s2: the twist's change per second.
        workspace_low, workspace_high: the end effector's box (m, base frame) for
            ``cartesian_velocity``; None: no box.
        velocity_hold_ticks: periods a twist is held if no new command comes (then franky brakes).
        relative_dynamics_factor: franky's scale of the arm's velocity, acceleration and jerk
            limits for every motion (0, 1].
        home_dynamics_factor: the same for the move home at reset.
        collision_torque_nm, collision_force_n: franky's collision thresholds (Nm, N).
        realtime: require a real-time kernel (libfranka's RealtimeConfig.Enforce); false for
            simulators and tests.
        link_timeout_s: the robot's state (1 kHz) must advance within this (s), else the link is
            lost (libfranka itself gives up after 1 s).
        command_timeout_s: how long (s) connect, the collision thresholds and error recovery may
            wait for the Control's answer before the link counts as lost.
        home_timeout_s: the same for the move home at reset (s; it lasts as long as the motion).
        max_episode_steps: an episode is truncated after this many ticks (None: never).
        tasks: task names a reset may name (hardware has no task list by default).
    """

    host: str
    action: Literal["joint", "cartesian_velocity"] = "joint"
    model: Literal["fr3", "panda"] = "fr3"
    rate_hz: float = 100.0
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()
    home: tuple[float, ...] | None = READY_POSE
    max_velocity_rad_s: float | tuple[float, ...] = 1.0
    max_linear_m_s: float = 0.2
    max_angular_rad_s: float = 0.5
    max_linear_accel_m_s2: float = 1.0
    max_angular_accel_rad_s2: float = 2.0
    workspace_low: tuple[float, float, float] | None = (0.2, -0.5, 0.05)
    workspace_high: tuple[float, float, float] | None = (0.8, 0.5, 0.9)
    velocity_hold_ticks: int = 3
    relative_dynamics_factor: float = 0.2
    home_dynamics_factor: float = 0.1
    collision_torque_nm: float = 20.0
    collision_force_n: float = 30.0
    realtime: bool = True
    link_timeout_s: float = 0.2
    command_timeout_s: float = 10.0
    home_timeout_s: float = 60.0
    max_episode_steps: int | None = None
    tasks: tuple[str, ...] = field(default=())
    robot_type: str = ""

    def __post_init__(self) -> None:
        if self.action not in ("joint", "cartesian_velocity"):
            raise ValueError(f"action must be 'joint' or 'cartesian_velocity', got {self.action!r}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}, got {self.model!r}")
        if not 0 < self.rate_hz <= MAX_RATE_HZ:
            raise ValueError(f"rate_hz must be in (0, {MAX_RATE_HZ:.0f}] (libfranka's loop), got {self.rate_hz}")
        limits = MODELS[self.model]
        self.low = tuple(float(v) for v in self.low) or limits["low"]
        self.high = tuple(float(v) for v in self.high) or limits["high"]
        for name in ("low", "high") + (("home",) if self.home is not None else ()):
            if len(getattr(self, name)) != 7:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for 7 joints")
        for j, (lo, hi, mlo, mhi) in enumerate(zip(self.low, self.high, limits["low"], limits["high"])):
            if not mlo <= lo < hi <= mhi:
                raise ValueError(f"joint_{j + 1}: limits [{lo}, {hi}] rad must lie within the {self.model}'s "
                                 f"[{mlo}, {mhi}] with low < high")
        if self.home is not None:
            self.home = tuple(float(v) for v in self.home)
            outside = [f"joint_{j + 1}" for j, (q, lo, hi) in enumerate(zip(self.home, self.low, self.high))
                       if not lo <= q <= hi]
            if outside:
                raise ValueError(f"home is outside the joint limits at {', '.join(outside)}")
        speed = self.max_velocity_rad_s
        speed = (float(speed),) * 7 if isinstance(speed, (int, float)) else tuple(float(v) for v in speed)
        if len(speed) != 7 or not all(0 < v <= m for v, m in zip(speed, limits["velocity"])):
            raise ValueError(f"max_velocity_rad_s must be 1 or 7 values in (0, the {self.model}'s "
                             f"{list(limits['velocity'])}] rad/s, got {self.max_velocity_rad_s}")
        self.max_velocity_rad_s = speed
        for name in ("max_linear_m_s", "max_angular_rad_s", "max_linear_accel_m_s2", "max_angular_accel_rad_s2",
                     "collision_torque_nm", "collision_force_n", "link_timeout_s", "command_timeout_s",
                     "home_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("relative_dynamics_factor", "home_dynamics_factor"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if (self.workspace_low is None) != (self.workspace_high is None):
            raise ValueError("give both workspace_low and workspace_high, or neither")
        if self.workspace_low is not None:
            self.workspace_low, self.workspace_high = tuple(self.workspace_low), tuple(self.workspace_high)
            if len(self.workspace_low) != 3 or len(self.workspace_high) != 3 or \
                    not all(lo < hi for lo, hi in zip(self.workspace_low, self.workspace_high)):
                raise ValueError(f"workspace must be x, y, z boxes with low < high, got "
                                 f"{self.workspace_low} .. {self.workspace_high}")
        if int(self.velocity_hold_ticks) < 1:
            raise ValueError(f"velocity_hold_ticks must be >= 1, got {self.velocity_hold_ticks}")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or null, got {self.max_episode_steps}")
        self.tasks = tuple(self.tasks)
        self.robot_type = self.robot_type or f"franka-{self.model}"

    def spec(self) -> RobotSpec:
        """The arm's robot spec (see the module docstring for features, units and limits)."""
        period = 1.0 / self.rate_hz
        ee_pose = Feature("float32", (7,), EE_POSE_NAMES, "m|quat")
        if self.action == "joint":
            state = Feature("float32", (7,), JOINT_NAMES, "rad")
            action = Feature("float32", (7,), JOINT_NAMES, "rad", low=self.low, high=self.high)
            safety = SafetySpec(max_velocity=self.max_velocity_rad_s)
        else:
            state = Feature("float32", (10,), JOINT_NAMES + ("ee_x", "ee_y", "ee_z"), "rad|m")
            lin, ang = self.max_linear_m_s, self.max_angular_rad_s
            action = Feature("float32", (6,), TWIST_NAMES, "m/s|rad/s", low=(-lin,) * 3 + (-ang,) * 3,
                             high=(lin,) * 3 + (ang,) * 3)
            box = {} if self.workspace_low is None else dict(
                workspace_low=self.workspace_low, workspace_high=self.workspace_high,
                ee_state_names=("ee_x", "ee_y", "ee_z"), ee_action_axes=(0, 1, 2), ee_action_kind="delta")
            safety = SafetySpec(max_delta_per_tick=(self.max_linear_accel_m_s2 * period,) * 3
                                + (self.max_angular_accel_rad_s2 * period,) * 3, **box)
        return RobotSpec(self.robot_type, self.rate_hz, {"observation.state": state, "observation.ee_pose": ee_pose},
                         action, tasks=self.tasks, safety=safety)


def _franky():
    try:
        import franky
    except ImportError as e:
        raise FrankaError(f"franky is not installed ({e}): pip install 'tether[franka]'") from e
    return franky


def _never_destroyed(robot) -> None:
    """Leave a ``franky.Robot`` whose link is lost alive for the rest of the process.

    Its destructor sends libfranka's StopMove and waits for the answer with no timeout and with
    the GIL held: against a Control that stopped answering (a pulled cable, a hung Control) that
    freezes every Python thread of the process, signals and pytest-timeout included (seen:
    ``tether serve`` and the test suite frozen in ``franka::Robot::stop``). The extra reference
    is never released, so the destructor never runs; the OS closes its sockets at exit.
    """
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(robot))


def error_names(errors) -> tuple[str, ...]:
    """The flags set in a ``franky.Errors`` (libfranka's error names)."""
    return tuple(name for name in dir(type(errors))
                 if isinstance(getattr(type(errors), name), property) and getattr(errors, name) is True)


class FrankaArm(Robot):
    """A Franka FR3 / Panda through franky (see the module docstring and ``FrankaConfig``).

    Raises:
        FrankaError: from ``connect`` (not reachable, FCI off, version or real-time problem, a
            fault that needs a person), from any call once the link is lost, from ``reset`` when
            recovery is refused, and from ``act`` for an action outside the spec's limits.
        FrankaReflexError: from ``act`` / ``hold`` / ``observe`` when the robot stopped itself.
    """

    def __init__(self, config: FrankaConfig):
        self.config = config
        self.spec = config.spec()
        self._low = np.asarray(self.spec.action.low)
        self._high = np.asarray(self.spec.action.high)
        self._robot = None
        self._franky = None
        self._goal: np.ndarray | None = None  # joint mode: the target being held (rad)
        self._stopping = False
        self._twist = np.zeros(6, np.float32)  # cartesian mode: the last twist sent
        self._ticks_since_twist = 0
        self._lost: str | None = None
        self._steps = 0
        # the last robot state's time (s), when it was new, when it was last checked (monotonic s)
        self._stamp: float | None = None
        self._stamp_seen = self._checked_at = 0.0

    # -------------------------------------------------------------------------------- links
    def _lose(self, e: Exception) -> FrankaError:
        self._lost = f"lost the link to the Franka at {self.config.host} ({e}); the robot stops itself on a broken link"
        return FrankaError(self._lost)

    @staticmethod
    def _answered(what: str, timeout_s: float, command):
        """``command()`` (a blocking libfranka call) with a deadline. It runs in a daemon thread
        because libfranka waits inside C++ for the Control's answer, where neither a signal nor
        the caller can interrupt it; that thread ends when the connection does.

        Raises:
            TimeoutError: no answer within ``timeout_s`` (s); the callers treat it as a lost link.
            Whatever ``command`` raised.
        """
        outcome: list = []

        def run():
            try:
                outcome.append((True, command()))
            except BaseException as e:  # noqa: BLE001 (handed to the caller)
                outcome.append((False, e))

        thread = threading.Thread(target=run, name=f"franka {what}", daemon=True)
        thread.start()
        thread.join(timeout_s)
        if thread.is_alive():
            raise TimeoutError(f"{what}: no answer from the Control within {timeout_s:g} s")
        ok, value = outcome.pop()
        if ok:
            return value
        # without the thread's frames: they hold the franky Robot, which must go with the driver
        raise value.with_traceback(None)

    def _state(self):
        """The latest robot state (franky reads one from the network when no motion runs)."""
        try:
            return self._robot.state
        except self._franky.NetworkException as e:
            raise self._lose(e) from e

    def _has_errors(self) -> bool:
        return bool(error_names(self._state().current_errors))

    def _reflex(self, e: Exception | None) -> FrankaReflexError:
        state = self._state()
        reasons = error_names(state.last_motion_errors) or error_names(state.current_errors)
        first = str(e).splitlines()[0] if e is not None else f"robot mode {state.robot_mode.name}"
        return FrankaReflexError(f"reflex: {', '.join(reasons) or 'no error flag'} ({first}); the arm stopped "
                                 "and holds; the next reset runs automatic error recovery", reasons)

    def _check(self) -> None:
        """Raise what the motion thread met since the last call (reflex, lost link)."""
        if self._lost is not None:
            raise FrankaError(self._lost)
        f = self._franky
        try:
            self._robot.poll_motion()
        except f.ControlException as e:
            raise self._reflex(e) from e
        except f.NetworkException as e:
            raise self._lose(e) from e
        except f.CommandException as e:  # a motion that reached the Control after a reflex
            if self._state().robot_mode == f.RobotMode.Reflex:
                raise self._reflex(e) from e
            raise FrankaError(f"franky refused the motion: {e}") from e
        state = self._state()
        if state.robot_mode == f.RobotMode.Reflex:
            raise self._reflex(None)
        self._check_fresh(state.time.to_msec() / 1000.0, time.monotonic())

    def _check_fresh(self, stamp: float, now: float) -> None:
        """The robot's clock (its state's time, s) must move on with the wall clock: the same
        state for longer than ``link_timeout_s``, or a robot clock that stood still for most of a
        longer gap between two checks, is a lost link (a simulator slower than real time still
        passes: only a standstill counts)."""
        timeout = self.config.link_timeout_s
        if self._stamp is not None:
            gap = now - self._checked_at
            if stamp == self._stamp and now - self._stamp_seen > timeout:
                raise self._lose(f"no new robot state for {now - self._stamp_seen:.2f} s")
            if gap > timeout and gap - (stamp - self._stamp) > timeout:
                raise self._lose(f"the robot's clock advanced {stamp - self._stamp:.3f} s in {gap:.2f} s")
        if stamp != self._stamp:
            self._stamp, self._stamp_seen = stamp, now
        self._checked_at = now

    def _move(self, motion) -> None:
        f = self._franky
        try:
            self._robot.move(motion, asynchronous=True)
        except f.NetworkException as e:
            raise self._lose(e) from e
        except (f.CommandException, f.ControlException) as e:
            if self._state().robot_mode == f.RobotMode.Reflex:
                raise self._reflex(e) from e
            raise FrankaError(f"franky refused the motion: {e}") from e

    def connect(self) -> None:
        f = self._franky = _franky()
        realtime = f.RealtimeConfig.Enforce if self.config.realtime else f.RealtimeConfig.Ignore
        self._lost = None
        # libfranka raises the thread that constructs the robot to SCHED_FIFO 99 (when allowed,
        # even with RealtimeConfig.Ignore) and leaves it so: that is _answered's own thread, which
        # ends, so the caller (the robot server's loop) keeps its scheduling and tether serve
        # --fifo-priority stays the one setting for it (seen: a server thread left at FIFO 99
        # starved the other threads of a 2-core machine).
        try:
            self._robot = self._answered("connect", self.config.command_timeout_s, lambda: f.Robot(
                self.config.host, relative_dynamics_factor=self.config.relative_dynamics_factor,
                realtime_config=realtime))
        except f.IncompatibleVersionException as e:
            raise FrankaError(f"cannot connect to the Franka at {self.config.host}: {e} (install the franky-control "
                              "whose libfranka matches the robot's system version)") from e
        except f.RealtimeException as e:
            raise FrankaError(f"cannot connect to the Franka at {self.config.host}: {e} (run a PREEMPT_RT kernel "
                              "with an rtprio limit, or set realtime: false for a simulator)") from e
        except (f.NetworkException, TimeoutError) as e:
            raise FrankaError(f"cannot connect to the Franka at {self.config.host}: {e} (is FCI active in Desk, "
                              "the arm unlocked, and this computer wired to the Control's LAN port?)") from e
        try:
            try:
                self._answered("setting the collision thresholds", self.config.command_timeout_s,
                               lambda: self._robot.set_collision_behavior(self.config.collision_torque_nm,
                                                                          self.config.collision_force_n))
            except (f.NetworkException, TimeoutError) as e:
                raise self._lose(e) from e
            if self._has_errors():
                self._recover()
            self._goal = np.asarray(self._state().q, np.float32)
            if self.config.action == "joint":  # hold where it is: no jump when control starts
                self._move(f.JointMotion(self._goal.astype(np.float64), return_when_finished=False))
        except BaseException:
            robot, self._robot = self._robot, None
            if self._lost is not None:
                _never_destroyed(robot)
            raise

    def _recover(self) -> None:
        f = self._franky
        before = error_names(self._state().current_errors)
        try:
            # its bool can read a state from before the recovery
            self._answered("automatic error recovery", self.config.command_timeout_s,
                           lambda: self._robot.recover_from_errors())
        except f.CommandException as e:
            raise FrankaError(f"automatic error recovery refused: {e}; recover the robot by hand (release the "
                              "user stop, or guide it out of the fault in Desk) and reset again") from e
        except (f.NetworkException, TimeoutError) as e:
            raise self._lose(e) from e
        deadline = time.monotonic() + 0.5  # the robot states that follow the answer show it
        while self._has_errors() and time.monotonic() < deadline:
            time.sleep(0.002)
        if self._has_errors():
            raise FrankaError(f"automatic error recovery did not clear {error_names(self._state().current_errors)}: "
                              "recover the robot by hand in Desk and reset again")
        log.warning("franka: recovered from %s", ", ".join(before) or "a reflex")

    def _stop_motion(self) -> None:
        """Bring any running motion to rest (the stop motion of the action's kind) and wait.

        Raises:
            TimeoutError: the motion did not end within ``command_timeout_s`` (a stop takes
                well under a second: the Control is not answering).
        """
        f = self._franky
        stop = f.JointStopMotion() if self.config.action == "joint" else f.CartesianVelocityStopMotion()
        self._robot.move(stop, asynchronous=True)
        if not self._robot.join_motion(self.config.command_timeout_s):
            raise TimeoutError(f"the stop before the move home did not end within {self.config.command_timeout_s:g} s")

    # ---------------------------------------------------------------------- Robot interface
    def reset(self, task: str | None, seed: int | None) -> Observation:
        check_reset_args(self.spec, task, seed)
        if self._lost is not None:
            raise FrankaError(self._lost)
        f = self._franky
        if self._has_errors() or self._state().robot_mode == f.RobotMode.Reflex:
            self._recover()
        try:
            self._robot.poll_motion()
        except f.ControlException:
            pass  # the reflex that was just recovered from
        except f.NetworkException as e:
            raise self._lose(e) from e
        self._stopping = False
        if self.config.home is not None:
            try:
                self._stop_motion()  # a velocity motion and a joint motion may not follow each other live
                home = f.JointMotion(np.asarray(self.config.home, np.float64),
                                     relative_dynamics_factor=self.config.home_dynamics_factor)
                self._answered("the move home", self.config.home_timeout_s, lambda: self._robot.move(home))
            except (f.NetworkException, TimeoutError) as e:
                raise self._lose(e) from e
            except (f.ControlException, f.CommandException) as e:
                raise self._reflex(e) from e
        self._goal = np.asarray(self._state().q if self.config.home is None else self.config.home, np.float32)
        self._twist = np.zeros(6, np.float32)
        if self.config.action == "joint":
            self._move(f.JointMotion(self._goal.astype(np.float64), return_when_finished=False))
        self._steps = 0
        self._stamp = None  # between episodes nothing is checked: start the link's clock afresh
        return self.observe()

    def act(self, action: np.ndarray) -> None:
        action = np.asarray(action, np.float32)
        if action.shape != self.spec.action.shape or not np.isfinite(action).all() \
                or (action < self._low).any() or (action > self._high).any():
            raise FrankaError(f"action {np.round(action, 4).tolist()} is outside the spec's limits "
                              f"[{self._low.tolist()}, {self._high.tolist()}]; nothing was sent")
        self._check()
        f = self._franky
        if self.config.action == "joint":
            self._goal = action
            self._move(f.JointMotion(action.astype(np.float64), return_when_finished=False))
        else:
            hold = f.Duration(int(math.ceil(self.config.velocity_hold_ticks * 1000.0 / self.config.rate_hz)))
            twist = f.Twist(action[:3].astype(np.float64), action[3:].astype(np.float64))
            self._move(f.CartesianVelocityMotion(twist, duration=hold))
            self._twist, self._ticks_since_twist = action, 0
        self._stopping = False
        self._steps += 1

    def _held_twist(self) -> np.ndarray:
        """The twist the arm is running now: franky holds the last one for
        ``velocity_hold_ticks`` periods, then brakes to rest by itself."""
        if self._stopping or self._ticks_since_twist >= self.config.velocity_hold_ticks:
            return np.zeros(6, np.float32)
        return self._twist.copy()

    def hold_action(self) -> np.ndarray:
        return self._goal.copy() if self.config.action == "joint" else self._held_twist()

    def hold(self) -> np.ndarray:
        self._check()
        if self.config.action == "joint":
            if self._stopping and not self._robot.poll_motion():  # the e-stop's deceleration ended
                self._goal = np.asarray(self._state().q, np.float32)
                self._stopping = False
            # franky's last JointMotion keeps holding its target: nothing to send
        else:
            self._ticks_since_twist += 1  # nothing sent: the last twist runs out by itself
        self._steps += 1
        return self.hold_action()

    def estop(self) -> None:
        # decelerate to rest along the path; the robot's own stop button is the hardware e-stop
        self._check()
        f = self._franky
        self._goal = np.asarray(self._state().q, np.float32)
        self._move(f.JointStopMotion() if self.config.action == "joint" else f.CartesianVelocityStopMotion())
        self._stopping = True

    def observe(self) -> Observation:
        self._check()
        state = self._state()
        q = np.asarray(state.q, np.float32)
        pose = state.O_T_EE
        xyz = np.asarray(pose.translation, np.float32)
        values = {"observation.state": q if self.config.action == "joint" else np.concatenate([q, xyz]),
                  "observation.ee_pose": np.concatenate([xyz, np.asarray(pose.quaternion, np.float32)])}
        limit = self.config.max_episode_steps
        return Observation(values, truncated=limit is not None and self._steps >= limit)

    def disconnect(self) -> None:
        robot, self._robot = self._robot, None
        if robot is None:
            return
        if self._lost is not None:
            _never_destroyed(robot)
            return
        f = self._franky
        stop = f.JointStopMotion() if self.config.action == "joint" else f.CartesianVelocityStopMotion()
        try:
            robot.move(stop, asynchronous=True)
            if not robot.join_motion(self.config.command_timeout_s):
                log.warning("franka: the stop at disconnect did not end within %g s", self.config.command_timeout_s)
                _never_destroyed(robot)
        except (f.ControlException, f.CommandException, f.NetworkException) as e:
            log.warning("franka: stopping at disconnect: %s", e)
