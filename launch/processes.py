"""Starting and stopping tether processes (robot servers, policy runners) from Python.

A child started by ``start`` does not outlive its parent, however the parent ends:

- SIGINT, or SIGTERM where the parent uses ``sigterm_as_interrupt``: the parent's ``finally``
  blocks run and ``stop`` asks the child to stop (a robot server holds the robot first);
- SIGKILL, a crash, or SIGTERM elsewhere: nothing runs in the parent, so the child asks Linux
  (``prctl(PR_SET_PDEATHSIG)``, in ``die_with_parent``, which ``tether``'s entry point calls
  first) to signal it when its parent dies, and then stops as on Ctrl-C (one SIGINT). The signal
  follows the *thread* that started the child: call ``start`` from a thread that lives as long
  as the child (the main thread). Other systems have no such call: there, a child of a SIGKILLed
  parent keeps running (kill the process group, e.g. ``kill -- -PGID``, to take both down).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tether.robot.client import RobotClient, RobotLinkError


def free_tcp_address() -> str:
    """A loopback ``tcp://127.0.0.1:PORT`` whose PORT and PORT + 1 are free now."""
    for _ in range(100):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return f"tcp://127.0.0.1:{port}"
    raise RuntimeError("no two adjacent free loopback ports found")


def tether_command(*args: str) -> list[str]:
    """The command line that runs ``tether ARGS`` with this interpreter."""
    return [sys.executable, "-m", "tether.launch.cli", *args]


PARENT_ENV = "TETHER_PARENT_PID"  # set by ``start``: the pid the child must not outlive
PR_SET_PDEATHSIG = 1  # linux/prctl.h
DEATH_SIGNAL = signal.SIGUSR2  # what Linux sends a child of ``start`` when its parent dies


def start(args: list[str], log_path: Path, die_with_parent: bool = True) -> subprocess.Popen:
    """Start ``tether ARGS`` in the background, its output going to ``log_path``.

    Args:
        die_with_parent: the child stops as on Ctrl-C when this process dies (Linux; see the
            module docstring), so a killed parent leaves no robot server behind.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, PARENT_ENV: str(os.getpid())} if die_with_parent else None
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(tether_command(*args), stdout=log, stderr=subprocess.STDOUT, env=env)


def die_with_parent() -> bool:
    """In a process started by ``start``: have Linux signal it when its parent dies
    (``PR_SET_PDEATHSIG``), and then stop as on Ctrl-C (one SIGINT); stop now if the parent is
    already gone (it died between starting this process and this call). Does nothing in a
    process not started by ``start``.

    The death signal is ``DEATH_SIGNAL`` (SIGUSR2), not SIGINT itself: Linux sends it again each
    time the orphan is handed from one dying thread of the parent to the next, and a handler that
    is not reentrant (``Event.set``, as ``tether serve``'s is) deadlocks on a second SIGINT that
    lands while the first is being handled. Its handler disarms the death signal and raises
    SIGINT exactly once.

    Returns:
        Whether the death signal is set (False: not a child of ``start``, not Linux, or not
        called from the main thread, where signal handlers live).

    Raises:
        KeyboardInterrupt: the parent died before the signal was set (as if it had come).
    """
    import threading

    parent = os.environ.pop(PARENT_ENV, None)  # not inherited by this process' own children
    if parent is None:
        return False
    armed = False
    if sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread():
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            libc = None
        fired = []

        def on_parent_death(signum, frame) -> None:
            if fired:  # a repeat from the next dying thread of the parent
                return
            fired.append(True)
            libc.prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0)  # no more of them
            signal.signal(DEATH_SIGNAL, signal.SIG_IGN)
            signal.raise_signal(signal.SIGINT)  # once: whatever this process does on Ctrl-C

        if libc is not None:
            signal.signal(DEATH_SIGNAL, on_parent_death)
            armed = libc.prctl(PR_SET_PDEATHSIG, int(DEATH_SIGNAL), 0, 0, 0) == 0
    if parent.isdigit() and os.getppid() != int(parent):
        raise KeyboardInterrupt  # orphaned already: the signal will never come
    return armed


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block (main thread only), SIGTERM raises ``SystemExit(143)`` (128 + SIGTERM)
    instead of ending the process at once, so ``finally`` blocks stop the children first."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_for_server(address: str, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Block until the robot server at ``address`` answers a handshake.

    Raises:
        RuntimeError: the process exited first, or no answer within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the robot server exited with code {process.returncode}")
        client = RobotClient(address, role="observer", name="health-check", timeout_s=1.0)
        try:
            client.connect()
            return
        except RobotLinkError:
            continue
        finally:
            client.close()
    raise RuntimeError(f"the robot server at {address} did not answer within {timeout_s:.0f} s")


def stop(process: subprocess.Popen, timeout_s: float = 10.0) -> int:
    """Ask a process to stop (SIGINT: a server holds the robot first), kill it if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
