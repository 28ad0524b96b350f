"""Shared fixtures: real robot servers on loopback, in a thread of the test process."""

from __future__ import annotations

import contextlib
import os
import threading

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from tether.launch.processes import free_tcp_address  # noqa: E402
from tether.robot.server import RobotServer  # noqa: E402


@contextlib.contextmanager
def serve_in_thread(robot, **kwargs):
    """Run a RobotServer for ``robot`` on a free loopback port; yields the server."""
    server = RobotServer(robot, free_tcp_address(), **kwargs)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run():
        try:
            server.run(stop)
        except BaseException as e:  # surfaced in the test below
            errors.append(e)
            server.ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert server.ready.wait(30), "server did not start"
    try:
        yield server
    finally:
        stop.set()
        thread.join(10)
    if errors:
        raise errors[0]


@pytest.fixture
def pointmass_server():
    from tether.robot.drivers.pointmass import PointMassRobot

    with serve_in_thread(PointMassRobot(rate_hz=200.0, max_episode_steps=400)) as server:
        yield server


@pytest.fixture
def serve():
    """The ``serve_in_thread`` context manager, for tests that build their own robot."""
    return serve_in_thread


def next_commanded(client, max_states: int = 50) -> dict:
    """The next state whose action came from a command (not a hold): a command sent just before
    a tick may land one tick later on a loaded machine."""
    for _ in range(max_states):
        state = client.next_state()
        if state["timing"]["command_latency_s"] is not None:
            return state
    raise AssertionError(f"no commanded state in {max_states} states")


@pytest.fixture
def commanded():
    """``next_commanded(client)``: the next state that applied a command."""
    return next_commanded
