"""The launch supervisor: runs the processes of a launch file (``tether.launch.launchfile``).

What it does, in order:

- Start: processes start in dependency order. Before a process starts, every dependency it needs
  ``healthy`` must pass its health check (a robot server's handshake, ``RobotClient.connect``);
  ``started`` dependencies only need to have been started. A failed health check (timeout, or the
  process exited first) shuts the launch down.
- Output: each process's stdout and stderr are streamed line by line with a coloured ``[name]``
  prefix (rich), and copied to ``LOG_DIR/NAME.log`` when a log folder is given; the supervisor's
  own lines are prefixed ``[launch]`` and its events go to ``LOG_DIR/events.jsonl``.
- Exits: a process that exits is restarted per its policy (``no`` / ``on-failure`` / ``always``,
  at most ``max_restarts`` times, exponential backoff). While a non-robot process is down, the
  robot holds because nothing commands it: the server's watchdog (``robot/PROTOCOL.md``) calls
  ``hold()`` on every tick without a command, and the restarted process takes over again. A process
  marked ``critical`` is never restarted: its exit latches the robot's e-stop at once (faster than
  the watchdog, and latched so nothing moves the robot until an operator clears it) and the launch
  shuts down. A process with ``on_exit: shutdown`` (a robot server by default) shuts the launch
  down when it ends for good.
- Shutdown (SIGINT / SIGTERM, ``request_stop``, an ``on_exit: shutdown`` process ending, or every
  process ended): first the robot is e-stopped through a ``RobotClient`` (confirmed by a state with
  ``estop`` set), then the other processes are stopped in reverse start order, the robot servers
  last; each gets SIGINT, then SIGTERM, then SIGKILL, ``stop_timeout_s`` apart (a second Ctrl-C
  shortens the waits). Signals go to the process group, so a child's own children stop too.

``run`` returns 0 when everything ended cleanly (no process failed for good, no health check
failed, no critical exit, every process stopped at SIGINT or SIGTERM) and 1 otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.text import Text

from tether.launch.launchfile import LaunchFile, Process
from tether.robot.client import RobotClient, RobotLinkError
from tether.robot.security import ClientKeys

COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan", "bright_magenta")
# Exit statuses of a process that stopped because it was asked to: 0, Python's KeyboardInterrupt
# exit through the tether CLI (130), a shell's 128 + SIGTERM, or death by the signal itself.
CLEAN_STOP = (0, 130, 143, -signal.SIGINT, -signal.SIGTERM)


@dataclass
class Event:
    """One thing the supervisor did or saw.

    Attributes:
        t: ``time.monotonic()`` when it happened, s.
        kind: ``start``, ``healthy``, ``unhealthy``, ``exit``, ``restart_scheduled``, ``restart``,
            ``gave_up``, ``shutdown``, ``estop``, ``estop_failed``, ``signal`` (a stop signal sent),
            ``stopped``, ``done``.
        process: the process it concerns ("" for the launch as a whole).
        detail: kind-specific fields (return code, signal name, restart count, reason, ...).
    """

    t: float
    kind: str
    process: str
    detail: dict = field(default_factory=dict)


@dataclass
class _Slot:
    """Run-time state of one process of the launch file."""

    spec: Process
    colour: str
    popen: subprocess.Popen | None = None
    reader: threading.Thread | None = None
    log: IO[bytes] | None = None
    restarts: int = 0
    restart_at: float | None = None  # time.monotonic() of a scheduled restart
    healthy: bool = False
    ended: bool = False  # exited and will not be restarted (or was never started)
    returncode: int | None = None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class Supervisor:
    """Run ``launch``: start, check health, stream output, restart, shut down in order.

    Args:
        launch: the parsed launch file.
        console: where prefixed output goes (default: a rich Console on stdout).
        log_dir: also write ``NAME.log`` per process and ``events.jsonl`` here; None: no files.
        poll_s: how often exits and scheduled restarts are checked, s.
    """

    def __init__(self, launch: LaunchFile, console: Console | None = None,
                 log_dir: Path | None = None, poll_s: float = 0.05):
        self.launch = launch
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.log_dir = log_dir
        self.poll_s = poll_s
        self.events: list[Event] = []
        self.slots = {
            p.name: _Slot(p, COLOURS[i % len(COLOURS)]) for i, p in enumerate(launch.processes)
        }
        self._print_lock = threading.Lock()
        self._stop = threading.Event()
        self._hurry = threading.Event()
        self._stop_reason = ""
        self._failures: list[str] = []
        self._events_file: IO[str] | None = None

    # ------------------------------------------------------------------------------- public API
    @property
    def restarts(self) -> dict[str, int]:
        """Process name -> how many times it was restarted."""
        return {name: s.restarts for name, s in self.slots.items()}

    @property
    def failures(self) -> list[str]:
        """Why the launch did not end cleanly (one line each); empty when it did."""
        return list(self._failures)

    def request_stop(self, reason: str = "stop requested") -> None:
        """Begin the orderly shutdown (what SIGINT does); a second call shortens the waits.
        Safe from any thread and from a signal handler."""
        if self._stop.is_set():
            self._hurry.set()
        else:
            self._stop_reason = reason
            self._stop.set()

    def run(self) -> int:
        """Run the launch until it shuts down; returns the exit code (0 clean, 1 not).

        SIGINT and SIGTERM begin the shutdown when ``run`` is called from the main thread.
        """
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._events_file = open(self.log_dir / "events.jsonl", "a", buffering=1)
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(
                    sig, lambda signum, _: self.request_stop(signal.Signals(signum).name)
                )
        try:
            self._start_all()
            while not self._stop.is_set():
                self._check_exits()
                self._restart_due()
                if all(s.ended for s in self.slots.values()):
                    self.request_stop("every process has ended")
                    break
                self._stop.wait(self.poll_s)
            return self._shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._events_file is not None:
                self._events_file.close()

    # ---------------------------------------------------------------------------------- helpers
    def _event(self, kind: str, process: str = "", **detail) -> None:
        event = Event(time.monotonic(), kind, process, detail)
        self.events.append(event)
        if self._events_file is not None:
            self._events_file.write(json.dumps({"t": event.t, "kind": kind, "process": process, **detail}) + "\n")

    def _say(self, message: str, style: str = "bold") -> None:
        with self._print_lock:
            self.console.print(Text.assemble(("[launch] ", style), message))

    def _fail(self, message: str) -> None:
        self._failures.append(message)
        self._say(message, "bold red")

    def _keys(self, p: Process) -> ClientKeys | None:
        h = p.health
        return None if h.client_key is None else ClientKeys(h.client_key, h.server_public_key)

    # ------------------------------------------------------------------------------------ start
    def _spawn(self, slot: _Slot) -> None:
        p = slot.spec
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **p.env}  # lines as they are printed
        if self.log_dir is not None and slot.log is None:
            slot.log = open(self.log_dir / f"{p.name}.log", "ab")
        try:
            # A session of its own: the terminal's Ctrl-C reaches only the supervisor, which
            # stops the children in order (and a child with stdin: inherit can still read it).
            slot.popen = subprocess.Popen(
                p.argv, cwd=p.cwd, env=env, start_new_session=True,
                stdin=None if p.stdin == "inherit" else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
        except OSError as e:  # no such program, not executable, bad cwd
            slot.popen, slot.ended = None, True
            self._event("exit", p.name, returncode=None, error=str(e))
            self._fail(f"{p.name}: cannot start {p.argv[0]!r}: {e}")
            if p.on_exit == "shutdown" or p.critical:
                self.request_stop(f"{p.name} could not start")
            return
        slot.healthy = p.health.robot is None
        slot.reader = threading.Thread(target=self._stream, args=(slot, slot.popen), daemon=True)
        slot.reader.start()
        self._event("start", p.name, pid=slot.popen.pid, restarts=slot.restarts)
        self._say(f"started {p.name} (pid {slot.popen.pid}): {p.cmd}")

    def _stream(self, slot: _Slot, popen: subprocess.Popen) -> None:
        prefix = (f"[{slot.spec.name}] ", slot.colour)
        for raw in iter(popen.stdout.readline, b""):
            if slot.log is not None:
                slot.log.write(raw)
                slot.log.flush()
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            with self._print_lock:
                self.console.print(Text.assemble(prefix, line))
        popen.stdout.close()

    def _start_all(self) -> None:
        for slot in self.slots.values():
            p = slot.spec
            for dep, condition in p.depends_on.items():
                if condition == "healthy" and not self._await_health(self.slots[dep]):
                    return
            if self._stop.is_set():
                return
            self._spawn(slot)
        for slot in self.slots.values():
            if not slot.healthy and slot.running and not self._await_health(slot):
                return

    def _await_health(self, slot: _Slot) -> bool:
        """Wait for ``slot``'s health check; on failure record it and begin the shutdown."""
        if slot.healthy:
            return True
        p = slot.spec
        deadline = time.monotonic() + p.health.timeout_s
        while (remaining := deadline - time.monotonic()) > 0 and not self._stop.is_set():
            if not slot.running:
                code = None if slot.popen is None else slot.popen.returncode
                self._event("unhealthy", p.name, reason="exited", returncode=code)
                self._fail(f"{p.name} exited (code {code}) before its health check passed")
                self.request_stop(f"{p.name} is not healthy")
                return False
            client = RobotClient(p.health.robot, role="observer", name="tether-launch-health",
                                 timeout_s=min(1.0, remaining), keys=self._keys(p))
            try:
                client.connect()
            except RobotLinkError:
                continue
            finally:
                client.close()
            slot.healthy = True
            self._event("healthy", p.name)
            self._say(f"{p.name} is healthy (robot server at {p.health.robot} answered)")
            return True
        if self._stop.is_set():
            return False
        self._event("unhealthy", p.name, reason="timeout")
        self._fail(f"{p.name}: no handshake from {p.health.robot} within {p.health.timeout_s:g} s")
        self.request_stop(f"{p.name} is not healthy")
        return False

    # ------------------------------------------------------------------------- exits / restarts
    def _check_exits(self) -> None:
        for slot in self.slots.values():
            if slot.popen is None or slot.ended or slot.restart_at is not None:
                continue
            code = slot.popen.poll()
            if code is not None:
                self._exited(slot, code)

    def _exited(self, slot: _Slot, code: int) -> None:
        p = slot.spec
        slot.returncode = code
        self._event("exit", p.name, returncode=code)
        if p.critical:
            slot.ended = True
            self._fail(f"{p.name} (critical) exited with code {code}: e-stopping the robot")
            self._hold_robots(f"critical process {p.name} exited with code {code}")
            self.request_stop(f"critical process {p.name} exited")
            return
        if p.restart.wants_restart(code, slot.restarts):
            delay = p.restart.delay_s(slot.restarts)
            slot.restart_at = time.monotonic() + delay
            self._event("restart_scheduled", p.name, returncode=code, restart=slot.restarts + 1,
                        max_restarts=p.restart.max_restarts, delay_s=delay)
            held = "" if p.role == "robot" or not self.launch.robots else "; the robot holds (watchdog)"
            self._say(f"{p.name} exited with code {code}: restart {slot.restarts + 1}/"
                      f"{p.restart.max_restarts} in {delay:g} s{held}", "bold yellow")
            return
        slot.ended = True
        if code != 0:
            if p.restart.policy != "no":
                self._event("gave_up", p.name, returncode=code, restarts=slot.restarts)
            self._fail(f"{p.name} exited with code {code}"
                       + (f" after {slot.restarts} restart(s)" if slot.restarts else ""))
        else:
            self._say(f"{p.name} finished (code 0)")
        if p.on_exit == "shutdown":
            self.request_stop(f"{p.name} ended")

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots.values():
            if slot.restart_at is not None and slot.restart_at <= now:
                slot.restart_at = None
                slot.restarts += 1
                self._event("restart", slot.spec.name, restart=slot.restarts)
                self._spawn(slot)

    # ----------------------------------------------------------------------------------- robot
    def _hold_robots(self, reason: str) -> None:
        """Latch the e-stop of every running robot server, waiting (up to 2 s each) for a state
        that shows it latched."""
        for slot in self.slots.values():
            p = slot.spec
            if p.role != "robot" or not slot.running:
                continue
            client = RobotClient(p.health.robot, role="observer", name="tether-launch",
                                 timeout_s=2.0, keys=self._keys(p))
            try:
                client.connect()
                client.estop(f"tether launch: {reason}")
                deadline = time.monotonic() + 2.0
                confirmed = False
                while not confirmed and time.monotonic() < deadline:
                    confirmed = bool(client.next_state(max(0.01, deadline - time.monotonic()))["estop"])
            except RobotLinkError as e:
                # The server may be hung or gone: stopping it next holds the robot on its way out.
                self._event("estop_failed", p.name, error=str(e))
                self._say(f"could not e-stop {p.name}: {e}", "bold red")
                continue
            finally:
                client.close()
            self._event("estop", p.name, confirmed=confirmed, reason=reason)
            self._say(f"e-stopped {p.name} ({'latched' if confirmed else 'sent, not confirmed'}): "
                      f"{reason}", "bold red")

    # -------------------------------------------------------------------------------- shutdown
    def _shutdown(self) -> int:
        self._event("shutdown", reason=self._stop_reason)
        self._say(f"shutting down ({self._stop_reason})")
        for slot in self.slots.values():
            if slot.restart_at is not None:  # a restart that has not happened yet never will
                slot.restart_at, slot.ended = None, True
        self._hold_robots("shutting down")
        order = [s for s in reversed(list(self.slots.values())) if s.spec.role != "robot"]
        order += [s for s in reversed(list(self.slots.values())) if s.spec.role == "robot"]
        for slot in order:
            self._stop_process(slot)
        for slot in self.slots.values():
            if slot.reader is not None:
                slot.reader.join(timeout=2.0)
            if slot.log is not None:
                slot.log.close()
        code = 1 if self._failures else 0
        self._event("done", returncode=code, failures=self.failures)
        self._say("all processes stopped" + ("" if code == 0 else f"; {len(self._failures)} "
                                                                   "problem(s) above"),
                  "bold" if code == 0 else "bold red")
        return code

    def _stop_process(self, slot: _Slot) -> None:
        p = slot.spec
        if not slot.running:
            if slot.popen is not None and not slot.ended:  # exited in the meantime
                self._exited_during_shutdown(slot)
            return
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            self._event("signal", p.name, signal=sig.name)
            try:
                os.killpg(slot.popen.pid, sig)
            except ProcessLookupError:
                pass
            timeout = 5.0 if sig == signal.SIGKILL else p.stop_timeout_s
            deadline = time.monotonic() + timeout
            while slot.popen.poll() is None and time.monotonic() < deadline:
                if self._hurry.is_set():
                    deadline = min(deadline, time.monotonic() + 0.5)
                time.sleep(0.02)
            if slot.popen.poll() is not None:
                break
        code = slot.popen.poll()
        slot.returncode, slot.ended = code, True
        self._event("stopped", p.name, returncode=code, signal=sig.name)
        if sig == signal.SIGKILL or code not in CLEAN_STOP:
            self._fail(f"{p.name} did not stop cleanly ({sig.name}, code {code})")
        else:
            self._say(f"stopped {p.name} (code {code})")

    def _exited_during_shutdown(self, slot: _Slot) -> None:
        code = slot.popen.returncode
        slot.returncode, slot.ended = code, True
        self._event("exit", slot.spec.name, returncode=code)
        if code not in CLEAN_STOP:
            self._fail(f"{slot.spec.name} exited with code {code}")
