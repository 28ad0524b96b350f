"""A Franka robot on the libfranka network protocol, for tests and benchmarks: franky-sim
(``pip install franky-sim``, Tim Schneider's drop-in FR3 simulator: a TCP command server on port
1337 and 1 kHz UDP robot states, Robot Server version 10, MuJoCo physics, pinocchio kinematics)
in a process of its own, as the robot is on its own computer, with faults franky-sim does not
produce itself. The simulation steps (1 kHz, most of a CPU core) only while a client is connected;
with none, time stands still for the arm.

franky-sim answers every libfranka command but simulates no errors (its README: no joint,
velocity or torque limits enforced, automatic error recovery always succeeds). ``FrankaPeer``
adds, on the wire, what a real FR3's controller does on a reflex: the running Move is answered
``kReflexAborted``, the states carry robot mode ``kReflex`` and the reason in ``current_errors`` and
``last_motion_errors`` (libfranka's ``Errors``, in the order of its ``errors.h``), a new Move is
refused (``kCommandNotPossibleRejected``) until an Automatic Error Recovery, which succeeds or,
for a fault that needs a person, is answered ``kManualErrorRecoveryRequiredRejected``.
``silence`` stops the peer answering at all (a pulled cable), ``vanish`` also resets its
connection (a controller that went away), ``deaf`` keeps its states flowing but leaves every
TCP command unanswered (a controller whose command handling hung: libfranka then waits for
ever). It records every joint-position command it received (``q_c`` of the 1 kHz UDP
commands), so a test can show what reached the robot.

The peer imports franky-sim (MuJoCo, pinocchio) in its own process only; this module itself
imports neither.

    with FrankaPeer() as peer:            # hostname: a 127.x.y.z loopback address
        robot = franky.Robot(peer.hostname, realtime_config=franky.RealtimeConfig.Ignore)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

# libfranka's franka::Errors, in the order of the robot state's error arrays (libfranka
# include/franka/errors.h; franky.Errors reports the same names).
LIBFRANKA_ERRORS = (
    "joint_position_limits_violation", "cartesian_position_limits_violation",
    "self_collision_avoidance_violation", "joint_velocity_violation", "cartesian_velocity_violation",
    "force_control_safety_violation", "joint_reflex", "cartesian_reflex",
    "max_goal_pose_deviation_violation", "max_path_pose_deviation_violation",
    "cartesian_velocity_profile_safety_violation", "joint_position_motion_generator_start_pose_invalid",
    "joint_motion_generator_position_limits_violation", "joint_motion_generator_velocity_limits_violation",
    "joint_motion_generator_velocity_discontinuity", "joint_motion_generator_acceleration_discontinuity",
    "cartesian_position_motion_generator_start_pose_invalid", "cartesian_motion_generator_elbow_limit_violation",
    "cartesian_motion_generator_velocity_limits_violation", "cartesian_motion_generator_velocity_discontinuity",
    "cartesian_motion_generator_acceleration_discontinuity", "cartesian_motion_generator_elbow_sign_inconsistent",
    "cartesian_motion_generator_start_elbow_invalid", "force_controller_desired_force_tolerance_violation",
    "start_elbow_sign_inconsistent", "communication_constraints_violation", "power_limit_violation",
    "cartesian_motion_generator_joint_position_limits_violation",
    "cartesian_motion_generator_joint_velocity_limits_violation",
    "cartesian_motion_generator_joint_velocity_discontinuity",
    "cartesian_motion_generator_joint_acceleration_discontinuity",
    "cartesian_position_motion_generator_invalid_frame_flag", "controller_torque_discontinuity",
    "joint_p2p_insufficient_torque_for_planning", "tau_J_range_violation", "instability_detected",
    "joint_move_in_wrong_direction", "cartesian_spline_motion_generator_violation",
    "joint_via_motion_generator_planning_joint_limit_violation", "base_acceleration_initialization_timeout",
    "base_acceleration_invalid_reading",
)
FR3_HOME = (0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785)  # franky-sim's DEFAULT_INITIAL_JOINT_POS (rad)


class FrankaPeer:
    """franky-sim in a child process, with fault injection; a context manager (``start`` /
    ``close``). ``hostname`` is where libfranka connects.

    Args:
        initial_q: the joint positions (rad) the simulated FR3 starts at.
        start_timeout_s: how long the child may take to load MuJoCo and bind.

    Raises:
        RuntimeError: the child failed to start (the error it printed), e.g. franky-sim missing.
    """

    def __init__(self, initial_q=FR3_HOME, start_timeout_s: float = 60.0):
        self.initial_q = tuple(float(v) for v in initial_q)
        self.start_timeout_s = start_timeout_s
        self.hostname: str | None = None
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def start(self) -> FrankaPeer:
        # its own interpreter (not multiprocessing): no fork of a process with threads and
        # sockets, and no re-import of the caller's __main__
        self._log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a full pipe would block it
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tether.robot.drivers.emulators.franka", json.dumps(self.initial_q)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        timer = threading.Timer(self.start_timeout_s, self._proc.kill)
        timer.start()
        try:
            line = self._proc.stdout.readline()
        finally:
            timer.cancel()
        if not line:
            self._proc.wait(10)
            self._log.seek(0)
            err = self._log.read().strip().splitlines()
            self.close()
            raise RuntimeError("franky-sim failed to start: " + (err[-1] if err else "no output"))
        kind, value = json.loads(line)
        if kind != "ok":
            self.close()
            raise RuntimeError(f"franky-sim failed to start: {value}")
        self.hostname = value
        return self

    def _call(self, *request):
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError("franky-sim peer is not running")
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            self._log.seek(0)
            err = self._log.read().strip().splitlines()
            raise RuntimeError("franky-sim peer exited: " + (err[-1] if err else "no output"))
        kind, value = json.loads(line)
        if kind != "ok":
            raise RuntimeError(f"franky-sim peer: {value}")
        return value

    # ------------------------------------------------------------------------- the test's hands
    def state(self) -> dict:
        """The simulated robot now: ``q`` and ``q_d`` (rad), ``O_T_EE`` (16, column-major),
        ``robot_mode`` (libfranka's RobotMode value), ``motion`` (a Move is running),
        ``q_c_min`` / ``q_c_max`` (per joint, rad, over every joint-position command received
        since ``clear_record``; None before the first) and ``commands`` (UDP commands received)."""
        return self._call("state")

    def reflex(self, errors=("joint_reflex",), recoverable: bool = True) -> None:
        """Trip a reflex now, as the FR3's controller does: the running motion is aborted
        (``kReflexAborted``), the robot holds where it is and reports the errors until an
        automatic error recovery, which fails if not ``recoverable`` (then ``clear``)."""
        unknown = [e for e in errors if e not in LIBFRANKA_ERRORS]
        if unknown:
            raise ValueError(f"not libfranka errors: {unknown}")
        self._call("reflex", tuple(errors), bool(recoverable))

    def clear(self) -> None:
        """A person cleared the fault (what a manual recovery does); the next recovery succeeds."""
        self._call("clear")

    def clear_record(self) -> None:
        """Forget the joint commands recorded so far."""
        self._call("clear_record")

    def silence(self) -> None:
        """The robot stops answering (a pulled cable): no states, no command answers, the
        connection left open; libfranka notices after its 1 s receive timeout."""
        self._call("silence")

    def deaf(self) -> None:
        """The robot's controller stops handling commands (connect, move, recovery, settings):
        each is read and never answered, while its 1 kHz states keep coming. libfranka's blocking
        commands have no timeout: they wait for ever."""
        self._call("deaf")

    def vanish(self) -> None:
        """The robot's controller goes away (powered off, rebooted): no more states, and its
        connection is reset (TCP RST), which libfranka notices at once."""
        self._call("vanish")

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.stdin.write(json.dumps(["close"]) + "\n")
                proc.stdin.flush()
                proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(5)
        for stream in (proc.stdin, proc.stdout, self._log):
            stream.close()

    def __enter__(self) -> FrankaPeer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------- the child side
_CHANNEL = None  # the child's answers to the parent; everything else printed goes to stderr


def _send(kind: str, value) -> None:
    _CHANNEL.write(json.dumps([kind, value]) + "\n")
    _CHANNEL.flush()


def _serve(initial_q) -> None:
    """The child (``python -m tether.robot.drivers.emulators.franka [INITIAL_Q_JSON]``; requests
    and answers are JSON lines on stdin / stdout): franky-sim's MuJoCo FR3 behind a fault-injecting robot server, stepped at 1 kHz
    by a thread; this thread answers the parent's requests between steps."""
    try:
        import socket
        import struct

        import numpy as np
        from franky_sim import SimulationServer
        from franky_sim.franka_robot_protocol import (
            AutomaticErrorRecoveryCommand, AutomaticErrorRecoveryStatus, MoveCommand, MoveStatus,
            RobotCommand, RobotMode, UDPCommand,
        )
        from franky_sim.franka_robot_server import ControlMode, FrankaRobotServer
        from franky_sim.franka_server import BaseCommand
        from franky_sim.mujoco_simulator import MujocoSimulator
    except ImportError as e:
        _send("error", f"{e} (pip install franky-sim)")
        return

    class Fault:
        errors: tuple[bool, ...] | None = None  # latched reflex reasons
        recoverable = True
        silent = False
        deaf = False
        q_c_min = q_c_max = None
        commands = 0

    fault = Fault()

    class GuardedMove(MoveCommand):
        def handle(self, server):
            if fault.errors is not None:  # a robot in reflex takes no motion until recovered
                self.reply(MoveStatus.kCommandNotPossibleRejected)
                return
            super().handle(server)

    class Recovery(AutomaticErrorRecoveryCommand):
        def handle(self, server):
            if fault.errors is not None and not fault.recoverable:
                self.reply(AutomaticErrorRecoveryStatus.kManualErrorRecoveryRequiredRejected)
                return
            fault.errors = None
            self.reply(AutomaticErrorRecoveryStatus.kSuccess)

    def deafened(handler):  # the command is read off the socket, then dropped while deaf
        class Deafened(handler):
            def handle(self, server, *args, **kwargs):
                if not fault.deaf:
                    super().handle(server, *args, **kwargs)

        return Deafened

    class PeerServer(FrankaRobotServer):
        def __init__(self, robot, hostnames):
            super().__init__(robot, hostnames)
            # franky-sim keeps its handlers in a private map of its base class
            handlers = self._FrankaServer__command_class_map
            handlers[RobotCommand.kMove] = GuardedMove
            handlers[RobotCommand.kAutomaticErrorRecovery] = Recovery
            for command, handler in handlers.items():
                handlers[command] = deafened(handler)

        def _handle_udp_command(self, data: bytes):
            cmd = UDPCommand.from_bytes(data)
            fault.commands += 1
            if fault.errors is not None:
                return  # in reflex the controller ignores motion commands
            if cmd.message_id > 0 and self._FrankaRobotServer__control_mode == ControlMode.POSITION \
                    and not cmd.motion_generation_finished:
                q = np.asarray(cmd.q_c)
                fault.q_c_min = q if fault.q_c_min is None else np.minimum(fault.q_c_min, q)
                fault.q_c_max = q if fault.q_c_max is None else np.maximum(fault.q_c_max, q)
            super()._handle_udp_command(data)

        @property
        def robot_state(self):
            state = super().robot_state
            if fault.errors is None:
                return state
            # franky-sim's ``errors`` / ``reflex_reason`` are libfranka's current_errors /
            # last_motion_errors on the wire
            return state.replace(robot_mode=RobotMode.kReflex, errors=fault.errors, reflex_reason=fault.errors)

        def trip(self, errors: tuple[bool, ...]):
            fault.errors = errors
            if self.current_motion_id:
                BaseCommand.send_response(self._tcp_socket, RobotCommand.kMove, self.current_motion_id,
                                          MoveStatus.kReflexAborted)
            self.stop_motion(send_preemption_signal=False)
            self.reset_current_motion_id()

    class PeerSimulation(SimulationServer):
        def init(self):
            for robot in self.sim.robots:
                server = PeerServer(robot, self._remaining_hostname_candidates)
                server.init()
                self.robot_servers.append(server)
            self.sim.start()

    step_lock = threading.Lock()
    running = threading.Event()
    try:
        sim = MujocoSimulator(enable_visualization=False)
        sim.__enter__()
        robot = sim.add_robot(initial_q=tuple(initial_q))
        server = PeerSimulation(sim)
        server.init()
    except Exception as e:  # the parent hears it
        _send("error", f"{type(e).__name__}: {e}")
        return
    rs = server.robot_servers[0]

    def loop():
        period, deadline = 0.001, time.perf_counter()
        while running.is_set():
            with step_lock:
                connected = rs.tcp_connected
                if fault.silent:
                    pass
                elif connected:
                    server.run_once(realtime=False)
                else:  # nobody connected: only wait for one (a step costs most of a core at 1 kHz)
                    rs.process_commands()
            if not connected:
                time.sleep(0.005)
                deadline = time.perf_counter()
                continue
            deadline += period
            delay = deadline - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.1:  # far behind (a loaded machine): do not try to catch up
                deadline = time.perf_counter()

    server.run_once(realtime=False)  # one step, so that the robot has a state before a client comes
    running.set()
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    _send("ok", robot.hostname)
    try:
        while True:
            line = sys.stdin.readline()
            if not line:
                break
            request = json.loads(line)
            kind = request[0]
            if kind == "close":
                break
            with step_lock:
                if kind == "state":
                    s = rs.robot_state
                    value = {"q": list(s.q), "q_d": list(s.q_d), "O_T_EE": list(s.O_T_EE),
                             "robot_mode": int(s.robot_mode), "motion": bool(rs.current_motion_id),
                             "q_c_min": None if fault.q_c_min is None else fault.q_c_min.tolist(),
                             "q_c_max": None if fault.q_c_max is None else fault.q_c_max.tolist(),
                             "commands": fault.commands, "connected": rs.tcp_connected}
                elif kind == "reflex":
                    names, fault.recoverable = request[1], request[2]
                    rs.trip(tuple(name in names for name in LIBFRANKA_ERRORS))
                    value = None
                elif kind == "clear":
                    fault.recoverable, value = True, None
                elif kind == "clear_record":
                    fault.q_c_min = fault.q_c_max = None
                    fault.commands, value = 0, None
                elif kind == "silence":
                    fault.silent, value = True, None
                elif kind == "deaf":
                    fault.deaf, value = True, None
                elif kind == "vanish":
                    fault.silent, value = True, None
                    client = rs._tcp_socket
                    if client is not None:  # SO_LINGER 0: close() sends RST, as a dead controller's stack does
                        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        client.close()
                else:
                    _send("error", f"unknown request {kind!r}")
                    continue
            _send("ok", value)
    finally:
        running.clear()
        thread.join(2)
        try:
            server.cleanup()
            sim.__exit__(None, None, None)
        except Exception:  # noqa: BLE001 (best effort at exit; the process ends anyway)
            pass


if __name__ == "__main__":
    # answers on a copy of stdout; fd 1 itself becomes stderr, so nothing a library prints (Python
    # or C) can corrupt the channel
    _CHANNEL = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _serve(json.loads(sys.argv[1]) if len(sys.argv) > 1 else FR3_HOME)
