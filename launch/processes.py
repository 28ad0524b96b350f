"""Starting and stopping tether processes (robot servers, policy runners) from Python."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
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


def start(args: list[str], log_path: Path) -> subprocess.Popen:
    """Start ``tether ARGS`` in the background, its output going to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")
    return subprocess.Popen(tether_command(*args), stdout=log, stderr=subprocess.STDOUT)


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
