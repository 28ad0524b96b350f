"""Shared fixtures: real robot servers on loopback, in a thread of the test process, and a real HTTP
server on loopback that answers like an OpenAI-compatible VLM."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    # Each pytest-xdist worker (and each CLI its tests start) gets its share of the cores for
    # torch's thread pool: two workers of two threads each on two cores spin against each other.
    # Set before anything imports torch, which reads it once.
    _share = max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))

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


class _CpuLock:
    """The run's CPU lock: ``flock`` on a file every pytest-xdist worker of the run opens (named by
    ``PYTEST_XDIST_TESTRUNUID``, which xdist gives every worker of one run), held shared or
    exclusive; a gate lock taken first keeps a waiting exclusive holder from being starved by the
    others' shared locks."""

    def __init__(self, run_id: str):
        root = Path(tempfile.gettempdir()) / f"tether-tests-{run_id}"
        root.mkdir(exist_ok=True)
        self._gate, self._cpu = open(root / "gate", "a"), open(root / "cpu", "a")
        self.exclusive: bool | None = None  # None: not held

    def hold(self, exclusive: bool) -> None:
        import fcntl

        if self.exclusive == exclusive:
            return
        self.release()
        fcntl.flock(self._gate, fcntl.LOCK_EX)
        fcntl.flock(self._cpu, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        fcntl.flock(self._gate, fcntl.LOCK_UN)
        self.exclusive = exclusive

    def release(self) -> None:
        import fcntl

        if self.exclusive is not None:
            fcntl.flock(self._cpu, fcntl.LOCK_UN)
            self.exclusive = None


_cpu_lock: _CpuLock | None = None


def _realtime(node) -> bool:
    return node.get_closest_marker("realtime") is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Under pytest-xdist, a test marked ``realtime`` (its module's mark or its own: real-time
    deadlines such as a 1 kHz franky-sim, servo emulators on ptys, a control loop's tick counts)
    runs with no other worker's test beside it, so that its timing is what the code does on 2
    cores, not the share another test leaves it; every other test holds the lock shared. The lock
    covers the whole protocol, setup and teardown included: a module-scoped fixture (an export, a
    server, a simulator process) runs inside its first test's setup and its last test's teardown,
    and outside the lock it ran beside real-time tests. A realtime module keeps the lock from its
    first test to its last (``--dist loadfile`` keeps a module on one worker): taken per test,
    each of about 90 real-time tests waited for the test in progress on the other worker. One
    process: nothing to do."""
    global _cpu_lock
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id is None:
        yield
        return
    if _cpu_lock is None:
        _cpu_lock = _CpuLock(run_id)
    module = item.getparent(pytest.Module)
    exclusive = _realtime(item)
    _cpu_lock.hold(exclusive)
    try:
        yield
    finally:
        next_module = nextitem.getparent(pytest.Module) if nextitem is not None else None
        if not (exclusive and _realtime(module) and next_module is module):
            _cpu_lock.release()


def _wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def wait_until():
    """``wait_until(condition, timeout_s, what)`` polls ``condition()`` every 10 ms until it holds;
    past ``timeout_s`` (s) it fails the test naming ``what``. For what another thread or process
    does on its own clock (a server's next tick, a learner's weights)."""
    return _wait_until


@pytest.fixture
def pty_pair():
    """A pseudo-terminal (master fd, slave fd): a test types on the master what a terminal
    device reads from the slave."""
    master, slave = os.openpty()
    yield master, slave
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


@pytest.fixture
def one_thread():
    """torch on one thread for the test: on two shared cores one thread is several times faster."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cli_error(capsys):
    """``cli_error(*args)`` runs ``tether ARGS`` that must fail as bad input: exit code 2 and a
    one-line ``tether: error: ...`` on stderr, which it returns (``one_line=False``: errors that
    list several items, such as a spec mismatch, may take more lines)."""
    from tether.launch.cli import main

    def run(*args, one_line: bool = True) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main([*map(str, args)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("tether: error: ") and not (one_line and "\n" in err)
        return err

    return run


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

def pointmass_reach_dataset(root, episodes=12, length=30, seed=0, rate_hz=200.0, camera=False):
    """Write point-mass episodes at ``rate_hz`` that steer noisily toward the origin, with reward
    -|position| (m), to a dataset at ``root``; returns ``root``. With ``camera``, a 32x32 frame
    whose brightness follows the reward."""
    import numpy as np

    from tether.robot.dataset import DatasetWriter
    from tether.robot.drivers.pointmass import TASK, pointmass_spec
    from tether.robot.spec import Feature, RobotSpec

    spec = pointmass_spec(rate_hz)
    if camera:
        spec = RobotSpec(spec.robot_type, spec.control_rate_hz,
                         {**spec.observation, "observation.images.front": Feature("uint8", (32, 32, 3), unit="pixel")},
                         spec.action, tasks=spec.tasks)
    writer = DatasetWriter(root, spec, fps=rate_hz)
    rng = np.random.default_rng(seed)
    for _ in range(episodes):
        pos, states, actions = rng.uniform(-0.5, 0.5, 2), [], []
        for _ in range(length):
            states.append(np.concatenate([pos, np.zeros(2)]))
            a = np.clip(-2 * pos + rng.normal(0, 0.5, 2), -1, 1)
            pos = pos + a / rate_hz
            actions.append(a)
        states = np.array(states, np.float32)
        frames = {"observation.state": states, "action": np.array(actions, np.float32),
                  "next.reward": -np.linalg.norm(states[:, :2], axis=1).astype(np.float32)}
        if camera:
            level = (255 * (1 - np.linalg.norm(states[:, :2], axis=1))).clip(0, 255).astype(np.uint8)
            frames["observation.images.front"] = np.broadcast_to(level[:, None, None, None], (length, 32, 32, 3)).copy()
        writer.add_episode(frames, TASK)
    return root


@pytest.fixture
def reach_dataset():
    """``reach_dataset(root, episodes=12, length=30, seed=0, rate_hz=200.0, camera=False)``: see
    :func:`pointmass_reach_dataset`."""
    return pointmass_reach_dataset


class PipeLines:
    """A subprocess pipe's lines, collected in a thread; ``wait_for`` consumes them up to the
    first line that holds a substring, so successive waits follow the output in order."""

    def __init__(self, pipe):
        self.lines: list[str] = []
        self.cursor = 0
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe):
        for line in pipe:
            self.lines.append(line)

    def wait_for(self, text: str, timeout_s: float = 30.0) -> None:
        """Return once a line after the last one consumed holds ``text``; AssertionError with the
        output's tail after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            while self.cursor < len(self.lines):
                self.cursor += 1
                if text in self.lines[self.cursor - 1]:
                    return
            time.sleep(0.02)
        raise AssertionError(f"{text!r} never printed; got {''.join(self.lines)[-3000:]}")


@pytest.fixture
def pipe_lines():
    """``pipe_lines(proc.stdout)``: a :class:`PipeLines` reading that pipe."""
    return PipeLines


class FakeVLM:
    """State of the fake endpoint.

    Attributes:
        url: base URL (``http://127.0.0.1:PORT/v1``).
        requests: (arrival time.monotonic(), headers dict, JSON payload) per request.
        faults: consumed one per request, first: "429" (Retry-After: ``retry_after``), "500",
            "401", "slow" (sleeps ``slow_s`` then answers), "not-json" (200 with HTML).
        replies: task text -> label-stage reply (None: a null content); default ``default_reply``.
        success_reply: the answer to a success question (``tether.perception.success_rewards``).
    """

    def __init__(self):
        self.requests: list[tuple[float, dict, dict]] = []
        self.faults: collections.deque[str] = collections.deque()
        self.replies: dict[str, str | None] = {}
        self.default_reply = "1"
        self.success_reply = "yes"
        self.retry_after = "1"
        self.slow_s = 1.0
        self.lock = threading.Lock()
        self.url = ""

    def label_requests(self) -> list[dict]:
        return [p for _, _, p in self.requests if isinstance(p["messages"][0]["content"], str)]


def _handler(state: FakeVLM):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _send(self, status: int, body: bytes, headers: dict | None = None,
                  content_type: str = "application/json"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                pass

        def do_POST(self):
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.requests.append((time.monotonic(), dict(self.headers), payload))
                fault = state.faults.popleft() if state.faults else None
            if self.path != "/v1/chat/completions":
                return self._send(404, b'{"error": "not found"}')
            if fault == "429":
                return self._send(429, b'{"error": {"message": "rate limited"}}',
                                  {"Retry-After": state.retry_after})
            if fault == "500":
                return self._send(500, b'{"error": {"message": "internal"}}')
            if fault == "401":
                return self._send(401, b'{"error": {"message": "invalid api key"}}')
            if fault == "not-json":
                return self._send(200, b"<html>gateway</html>", content_type="text/html")
            if fault == "slow":
                time.sleep(state.slow_s)
            content = payload["messages"][0]["content"]
            if isinstance(content, list) and "Has the task been completed" in content[0]["text"]:
                text = state.success_reply
            elif isinstance(content, list):  # analysis stage: images and questions
                text = "Image 1 shows the gripper far away; in Image 2 it touches the handle."
            else:  # labelling stage: find the task in the prompt
                text = state.default_reply
                for task, reply in state.replies.items():
                    if f"The goal is: {task}." in content:
                        text = reply
            body = {"id": "x", "object": "chat.completion", "model": payload["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}}
            self._send(200, json.dumps(body).encode())

    return Handler


@pytest.fixture
def fake_vlm():
    """A running :class:`FakeVLM` on 127.0.0.1 (an ephemeral port), stopped after the test."""
    state = FakeVLM()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# A dataset whose actions need the camera: a point mass steers to a target that only the frames
# show (a bright square on a dark image); observation.state holds the mass's position alone.
TARGET_TASKS = ("reach the target", "stay still")


def draw_target(target: np.ndarray, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: a 4-pixel white square at ``target`` in [-1, 1]^2."""
    img = np.zeros((size, size, 3), np.uint8)
    c = np.clip(((target + 1) / 2 * (size - 4)).astype(int), 0, size - 4)
    img[c[1] : c[1] + 4, c[0] : c[0] + 4] = 255
    return img


def target_dataset(root, episodes: int = 16, length: int = 20, seed: int = 0, sizes=((32, 32), (24, 32)),
                   rate_hz: float = 10.0, target_in_state: bool = False):
    """Write the dataset to ``root`` (cameras ``observation.images.cam0``.. of the ``sizes`` (H, W)).
    Episodes alternate between the tasks: "reach the target" moves toward it, "stay still" does
    not move. ``observation.state`` is the position (2), then with ``target_in_state`` the target
    (2: what a simulator knows and a camera shows). Returns ``root``."""
    from tether.robot.dataset import DatasetWriter
    from tether.robot.spec import Feature, RobotSpec

    cams = {f"observation.images.cam{i}": Feature("uint8", (h, w, 3), unit="pixel") for i, (h, w) in enumerate(sizes)}
    state_dim = 4 if target_in_state else 2
    spec = RobotSpec("target-mass", rate_hz, {"observation.state": Feature("float32", (state_dim,)), **cams},
                     Feature("float32", (2,), low=(-1.0, -1.0), high=(1.0, 1.0)), tasks=TARGET_TASKS)
    writer = DatasetWriter(root, spec, fps=rate_hz)
    rng = np.random.default_rng(seed)
    for e in range(episodes):
        task = TARGET_TASKS[e % 2]
        target = rng.uniform(-0.8, 0.8, 2)
        pos = rng.uniform(-0.8, 0.8, 2)
        states, actions = [], []
        for _ in range(length):
            states.append(np.concatenate([pos, target]) if target_in_state else pos.copy())
            a = np.clip(2 * (target - pos), -1, 1) if task == TARGET_TASKS[0] else np.zeros(2)
            actions.append(a)
            pos = pos + a / rate_hz
        frames = {"observation.state": np.array(states, np.float32), "action": np.array(actions, np.float32)}
        for i, (key, f) in enumerate(cams.items()):
            frame = draw_target(target, f.shape[1])[: f.shape[0]]
            frames[key] = np.repeat(frame[None], length, 0)
        writer.add_episode(frames, task)
    return root


@pytest.fixture(scope="session")
def target_data():
    """The camera-only target dataset: ``.write(root, ...)`` (:func:`target_dataset`), ``.tasks``,
    ``.draw(target, size)``."""
    import types

    return types.SimpleNamespace(write=target_dataset, tasks=TARGET_TASKS, draw=draw_target)
