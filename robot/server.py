"""The robot server: runs a ``Robot`` driver at a fixed control rate behind ZeroMQ.

Sockets (see ``robot/PROTOCOL.md``): a ROUTER at the command endpoint takes ``hello``,
``command``, ``chunk``, ``reset``, ``heartbeat`` and e-stop messages; a PUB at the state endpoint
publishes one ``state`` message per tick. The loop never blocks on the network: between ticks it
polls the ROUTER until the next deadline, keeps only the latest valid command (latest wins), and
at each tick applies that command once, else the action chunks' value for the tick's time, else
``hold()``. State is published on every tick, also between episodes (``done`` true, nothing
stepped; before the first episode ``episode`` is -1 and ``observation`` empty), so subscribers
can tell the link is alive. Every message that fails decoding, the handshake, the spec, the
safety layer or the freshness check is dropped and counted in ``stats.rejected``; no message can
end the server: an exception while handling one is counted (``handler_error``) and logged, and a
driver's failure to reset is answered with ``refused``. Frames are bounded before they are decoded
(``protocol.DecodeLimits.for_robot``: a peer that has not said hello may send a hello and no more),
so a single frame cannot hold the loop for long.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import zmq

from tether.robot import protocol
from tether.robot.chunks import ActionChunk, ChunkScheduler
from tether.robot.driver import Observation, Robot, RobotFault, check_reset_args
from tether.robot.realtime import freeze_gc
from tether.robot.safety import SafetyFilter, SafetyViolation
from tether.robot.security import InsecureBindError, ServerKeys, is_loopback
from tether.robot.spec import RobotSpec, SpecError, SpecMismatchError

log = logging.getLogger(__name__)

MAX_CHUNK = 1000  # actions per chunk
LOG_EVERY_S = 1.0  # a rejection reason is logged at most once per this many seconds
_SLEEP_S = 0.0001  # the longest sleep of a sub-millisecond wait between reads of the socket


@dataclass
class ServerStats:
    """Counters of a server run. ``received`` counts every message from a client; ``rejected``
    maps a reason to how many of them it dropped (the rest were accepted); ``clipped`` counts the
    safety layer's rejections and clips by limit."""

    ticks: int = 0
    received: int = 0
    overruns: int = 0
    commands_applied: int = 0
    holds: int = 0
    episodes: int = 0
    watchdog_trips: int = 0
    estops: int = 0
    faults: int = 0
    rejected: Counter = field(default_factory=Counter)
    clipped: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        """The counters as plain JSON-able values."""
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in vars(self).items()}


@dataclass
class _Command:
    action: np.ndarray
    ref_seq: int
    received: float  # time.monotonic()
    latency: float | None  # s from publishing state ``ref_seq`` to receiving this command


class RobotServer:
    """Serve ``robot`` at ``address`` (``tcp://HOST:PORT`` or ``ipc://PATH``).

    Args:
        robot: the driver; its ``spec`` is sent in the handshake and checked against clients'.
        address: where to bind (see ``protocol.endpoints``).
        rate_hz: control rate; defaults to ``robot.spec.control_rate_hz``.
        max_command_lag: a command answering a state more than this many ticks old is stale and
            dropped (the robot holds instead); one answering a state not yet published is
            dropped as ``future_ref``.
        watchdog_s: during an episode, no valid command for this long is logged as a watchdog
            trip (the robot holds on every tick without a command in any case).
        max_message_bytes: the cap on any frame; the server bounds frames further by what its
            spec needs (``protocol.DecodeLimits.for_robot``).
        keys: Curve key pair and client allow-list; without them the link is unauthenticated.
        insecure: allow binding a non-loopback address without keys.
        chunk_blend, chunk_ensemble_m, chunk_interpolate: how action chunks are executed
            (``tether.robot.chunks``).
        lockstep: simulators only: during an episode, tick as soon as a command answering the
            last state arrives (or after one period without one, holding as in real time), so
            a simulation runs as fast as its client and no tick is lost to a slow one (data
            collection, evaluation that must equal a direct simulation). Action chunks still run
            on the wall clock; use real-time mode for them.
        spin_s: the last this many seconds before each tick are spun rather than slept (a sleep
            wakes 50-100 us late on Linux): the tick's timing precision against one core's time
            (``spin_s`` x rate, e.g. 20% of a core at 1 kHz with the default 200 us; 0: no spin).

    Raises (from ``run``):
        InsecureBindError: a non-loopback address without keys and without ``insecure``.
    """

    def __init__(
        self,
        robot: Robot,
        address: str,
        rate_hz: float | None = None,
        max_command_lag: int = 3,
        watchdog_s: float = 0.5,
        max_message_bytes: int = protocol.MAX_MESSAGE_BYTES,
        keys: ServerKeys | None = None,
        insecure: bool = False,
        chunk_blend: Literal["latest", "ensemble"] = "latest",
        chunk_interpolate: bool = True,
        lockstep: bool = False,
        chunk_ensemble_m: float = 0.01,
        spin_s: float = 0.0002,
    ):
        if keys is None and not insecure and not is_loopback(address):
            raise InsecureBindError(
                f"refusing to bind {address} without Curve keys: anyone on the network could move "
                "the robot. Generate keys (tether keys generate) and pass them, or pass --insecure"
            )
        self.keys = keys
        self.robot = robot
        self.spec: RobotSpec = robot.spec
        self.address = address
        self.period = 1.0 / (rate_hz or self.spec.control_rate_hz)
        self.max_command_lag = max_command_lag
        self.lockstep = lockstep
        self.spin_s = max(0.0, min(spin_s, self.period / 2))
        self.watchdog_s = watchdog_s
        # peers that said hello may send up to a chunk; others a hello and no more
        self.limits = protocol.DecodeLimits.for_robot(self.spec, MAX_CHUNK, max_message_bytes)
        self.hello_limits = protocol.DecodeLimits.for_robot(self.spec, MAX_CHUNK, max_message_bytes,
                                                            handshaken=False)
        self.max_message_bytes = self.limits.max_bytes
        self.stats = ServerStats()
        self.session = secrets.randbits(62)  # tells clients that a restarted server is a new one
        self.safety = SafetyFilter(self.spec, self.period)
        self._logged: dict[str, float] = {}  # reason -> when it was last logged
        self.stats.clipped = self.safety.counts
        self._clients: set[bytes] = set()
        self._controllers: set[bytes] = set()
        self._command: _Command | None = None
        self._reset_request: tuple[bytes, str | None, int | None] | None = None
        self._seq = 0
        self._episode = -1
        self._step = 0
        self._task: str | None = None
        self._done = True
        self._obs: Observation | None = None
        self._last_command_t = 0.0
        self._last_applied: np.ndarray | None = None
        self._watchdog_tripped = False
        self._estop = False
        self._estop_pending = False
        self._published: dict[int, float] = {}
        self._chunks = ChunkScheduler(chunk_blend, chunk_ensemble_m, chunk_interpolate)
        self._chunk_command: _Command | None = None  # state seq -> perf_counter() at publication
        self._events: list[str] = []
        self.ready = threading.Event()

    # ----------------------------------------------------------------------------- network side
    def _reject(self, reason: str, detail: object = "") -> None:
        """Count a dropped message under ``reason``; log it at most once per reason per second."""
        self.stats.rejected[reason] += 1
        now = time.monotonic()
        if now - self._logged.get(reason, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[reason] = now
            log.warning("dropped a message (%s, %d so far): %s", reason, self.stats.rejected[reason], detail)

    def _handle(self, identity: bytes, frame: bytes) -> None:
        self.stats.received += 1
        known = identity in self._clients
        limits = self.limits if known else self.hello_limits
        if len(frame) > limits.max_bytes:
            self._reject("too_large", f"{len(frame)} bytes, limit {limits.max_bytes}"
                         + ("" if known else " before a hello"))
            return
        try:
            msg = protocol.decode(frame, limits=limits)
        except protocol.ProtocolError as e:  # decode wraps msgpack's own errors
            self._reject("malformed", e)
            return
        except Exception as e:  # a bug in decoding: counted like any handler's, never fatal
            self._reject("handler_error", f"decode: {type(e).__name__}: {e}")
            return
        try:
            self._dispatch(identity, msg)
        except Exception as e:  # a bug must not end the control loop: the robot would be left
            self._reject("handler_error", f"{msg['type']}: {type(e).__name__}: {e}")
            log.debug("handler error", exc_info=True)

    def _dispatch(self, identity: bytes, msg: dict) -> None:
        kind = msg["type"]
        if kind == "hello":
            self._hello(identity, msg)
        elif identity not in self._clients:
            self._reject("no_handshake", kind)
        elif kind == "heartbeat":
            pass
        elif kind == "estop":  # any connected client may stop the robot
            self._trip_estop(msg["reason"])
        elif identity not in self._controllers:
            self._reject("not_a_controller", kind)
        elif kind == "command":
            self._accept_command(msg)
        elif kind == "chunk":
            self._accept_chunk(msg)
        elif kind == "reset":
            self._request_reset(identity, msg)
        elif kind == "clear_estop":
            if self._estop:
                self._estop = False
                self._events.append("estop_cleared")
                log.warning("e-stop cleared")
        else:
            self._reject("unexpected_type", kind)

    def _reply(self, identity: bytes, msg_type: str, **fields) -> None:
        self._router.send_multipart([identity, protocol.encode(msg_type, self._seq, **fields)])

    def _hello(self, identity: bytes, msg: dict) -> None:
        try:
            if msg["role"] not in protocol.ROLES:
                raise ValueError(f"unknown role {msg['role']!r}; expected one of {protocol.ROLES}")
            if msg["spec"] is not None:
                self.spec.check_policy(RobotSpec.from_dict(msg["spec"]))
        except (SpecMismatchError, SpecError, ValueError) as e:
            self._reject("handshake", f"client {msg['client']!r}: {e}")
            self._reply(identity, "refused", reason=str(e))
            return
        self._clients.add(identity)
        self._controllers.discard(identity)
        if msg["role"] == "controller":
            self._controllers.add(identity)
        log.info("client %r connected as %s", msg["client"], msg["role"])
        self._reply(
            identity, "welcome", spec=self.spec.to_dict(), server=self.spec.robot_type,
            session=self.session,
        )

    def _trip_estop(self, reason: str) -> None:
        if not self._estop:
            self._estop = True
            self.stats.estops += 1
            self._events.append("estop")
            self._command = None
            self._estop_pending = True
            log.error("E-STOP: %s (latched until a controller sends clear_estop)", reason)

    def _fresh(self, ref_seq: int) -> bool:
        """Whether a command answering state ``ref_seq`` may run now; counts it if not."""
        if ref_seq > self._seq:
            self._reject("future_ref", f"ref_seq {ref_seq}, last state {self._seq}")
            return False
        if self._seq - ref_seq > self.max_command_lag:
            self._reject("stale", f"ref_seq {ref_seq}, last state {self._seq}")
            return False
        return True

    def _accept_command(self, msg: dict) -> None:
        if self._estop:
            self._reject("estop", "command")
            return
        if self._done:
            self._reject("no_episode", "command")
            return
        try:
            action = self.safety.check(msg["action"])
        except SafetyViolation as e:
            self._reject("invalid_action", e)
            return
        if not self._fresh(msg["ref_seq"]):
            return
        self._command = self._received(action, msg["ref_seq"])
        self._chunks.clear()  # latest wins: a single command replaces any plan in flight

    def _received(self, action: np.ndarray, ref_seq: int) -> _Command:
        """Book-keeping of a valid command or chunk: latency, watchdog."""
        published = self._published.get(ref_seq)
        latency = None if published is None else time.perf_counter() - published
        self._last_command_t = time.monotonic()
        self._watchdog_tripped = False
        return _Command(action, ref_seq, self._last_command_t, latency)

    def _accept_chunk(self, msg: dict) -> None:
        if self._estop or self._done:
            self._reject("estop" if self._estop else "no_episode", "chunk")
            return
        actions, t0, dt = msg["actions"], msg["t0"], msg["dt"]
        shape = self.spec.action.shape
        if (
            actions.ndim != len(shape) + 1 or actions.shape[1:] != shape
            or not 1 <= len(actions) <= MAX_CHUNK or not (np.isfinite(t0) and 0 < dt < 10)
        ):
            self._reject("invalid_chunk", f"shape {actions.shape}, t0 {t0}, dt {dt}")
            return
        try:
            checked = np.stack([self.safety.check(a) for a in actions])
        except SafetyViolation as e:
            self._reject("invalid_action", e)
            return
        if not self._fresh(msg["ref_seq"]):
            return
        chunk = ActionChunk(checked, t0, dt)
        if chunk.end < time.monotonic():
            self._reject("expired", f"chunk ended at {chunk.end:.3f} s")
            return
        self._command = None  # the newest message wins
        self._chunk_command = self._received(checked[0], msg["ref_seq"])
        self._chunks.add(chunk)

    def _ready_early(self) -> bool:
        """Lockstep: the next tick may come now (the last state is answered, or a reset/e-stop
        waits)."""
        if self._reset_request is not None or self._estop_pending:
            return True
        return not self._done and self._command is not None and self._command.ref_seq == self._seq

    def _drain(self, deadline: float) -> bool:
        """Handle the queued messages, never past ``deadline`` (perf_counter s): a flood waits
        for the next gap rather than delaying the tick. Returns whether the tick may come now
        (lockstep)."""
        while time.perf_counter() < deadline:
            try:
                parts = self._router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(parts) != 2:
                self.stats.received += 1
                self._reject("malformed", f"{len(parts) - 1} frames in one message")
                continue
            self._handle(parts[0], parts[1])
            if self.lockstep and self._ready_early():
                return True
        return self.lockstep and self._ready_early()

    def _poll_until(self, deadline: float) -> None:
        """Handle incoming messages until ``deadline`` (perf_counter s). In lockstep mode it
        returns as soon as the next tick may come.

        ZeroMQ's poll has millisecond resolution and a sleeping thread wakes late, so the wait
        is in three parts: poll in whole milliseconds while more than one remains (it wakes on a
        message), short sleeps between non-blocking reads below that, and a spin over the last
        ``spin_s`` that still takes messages. At every moment a message that arrives before the
        deadline is handled before the tick (at 1 kHz every wait is under a millisecond: a loop
        that only polled in whole milliseconds never read its socket).
        """
        while not self._drain(deadline):
            remaining = deadline - time.perf_counter()
            if remaining <= self.spin_s:
                break
            if remaining >= 0.001 + self.spin_s:
                self._router.poll(int((remaining - self.spin_s) * 1000))
            else:
                time.sleep(min(_SLEEP_S, remaining - self.spin_s))
        else:
            return
        while time.perf_counter() < deadline:  # the spin
            if self._router.poll(0) and self._drain(deadline):
                return

    def _request_reset(self, identity: bytes, msg: dict) -> None:
        """Check a reset's task and seed now (refused at once if they do not fit the robot), run
        it at the next tick."""
        try:
            check_reset_args(self.spec, msg["task"], msg["seed"])
        except ValueError as e:
            self._reject("bad_reset", e)
            self._reply(identity, "refused", reason=f"reset refused: {e}")
            return
        self._reset_request = (identity, msg["task"], msg["seed"])

    # ------------------------------------------------------------------------------ robot side
    def _reset(self) -> None:
        identity, task, seed = self._reset_request
        self._reset_request = None
        if self._estop:
            self._reply(identity, "refused", reason="reset refused: the e-stop is latched")
            return
        try:
            self._obs = self.robot.reset(task, seed)
        except Exception as e:  # the driver's own check or fault: the client hears it, the loop runs
            # an episode cut by a failed reset does not go on: the scene may be half reset
            self._done = True
            self._reject("reset_failed", f"{type(e).__name__}: {e}")
            self._reply(identity, "refused", reason=f"reset failed: {type(e).__name__}: {e}")
            return
        self._episode += 1
        self._step = 0
        self._task = task or (self.spec.tasks[0] if self.spec.tasks else None)
        self._done = False
        self._command = None
        self._chunks.clear()
        self._last_applied = self.robot.hold_action()  # the first command's slew-rate reference
        self._last_command_t = time.monotonic()
        self._watchdog_tripped = False
        self.stats.episodes += 1
        self._reply(identity, "reset_done", episode=self._episode, task=self._task)

    def _step_robot(self) -> tuple[np.ndarray | None, _Command | None]:
        """Apply the pending command, else the chunks' action for now, else hold, for one tick;
        returns (applied action, the command or chunk it came from)."""
        command, self._command = self._command, None
        now = time.monotonic()
        if not self._watchdog_tripped and now - self._last_command_t > self.watchdog_s:
            self._watchdog_tripped = True
            self.stats.watchdog_trips += 1
            self._events.append("watchdog")
            self._chunks.clear()  # a silent client's plan is not executed to its end
            log.warning("watchdog: no valid command for %.3f s, holding", self.watchdog_s)
        action = None
        if not self._estop:
            if command is not None:
                action = command.action
            else:
                action = self._chunks.action_at(now)
                command = self._chunk_command if action is not None else None
        try:
            if action is not None:
                applied = self.safety.limit(action, self._last_applied, self._obs.values)
                self.robot.act(applied)
                self.stats.commands_applied += 1
            else:
                applied = self.robot.hold()
                self.stats.holds += 1
            if applied is not None:
                self._last_applied = applied
            self._obs = self.robot.observe()
        except RobotFault as e:  # the robot stopped itself: this episode ends, the server runs on
            self.stats.faults += 1
            self._events.append(f"fault: {e}")
            log.error("robot fault, episode %d ends: %s", self._episode, e)
            self._done = True
            return None, None
        self._step += 1
        self._done = self._obs.done
        return applied, command

    def _tick(self, period_s: float) -> None:
        start = time.perf_counter()
        applied, command = None, None
        if self._estop_pending:
            self._estop_pending = False
            self.robot.estop()
        if self._reset_request is not None:
            self._reset()
        elif not self._done:
            applied, command = self._step_robot()
        obs = self._obs
        self._seq += 1
        self._pub.send(
            protocol.encode(
                "state",
                self._seq,
                session=self.session,
                episode=self._episode,
                step=self._step,
                task=self._task,
                observation={} if obs is None else obs.values,
                action=applied,
                reward=0.0 if obs is None else float(obs.reward),
                success=False if obs is None else bool(obs.success),
                done=bool(self._done),
                estop=self._estop,
                events=self._events,
                timing={
                    "period_s": period_s,
                    "compute_s": time.perf_counter() - start,
                    "command_age_s": None if command is None else time.monotonic() - command.received,
                    "command_latency_s": None if command is None else command.latency,
                    "lockstep": self.lockstep,
                },
            ),
            copy=False,
        )
        self._published[self._seq] = time.perf_counter()
        self._published.pop(self._seq - 4 * self.max_command_lag - 4, None)
        self._events = []

    def run(self, stop: threading.Event | None = None, duration_s: float | None = None) -> ServerStats:
        """Bind, connect the robot and run the control loop until ``stop`` is set (or for
        ``duration_s``). The robot is held and disconnected on the way out, whatever happens.

        ``stop``: anything with ``is_set()`` (a signal handler's lock-free flag:
        ``tether.launch.serve.StopFlag``)."""
        stop = stop or threading.Event()
        cmd_ep, state_ep = protocol.endpoints(self.address)
        ctx = zmq.Context()  # its own: the ZAP authenticator is per context
        self._router = ctx.socket(zmq.ROUTER)
        self._pub = ctx.socket(zmq.PUB)
        auth = None if self.keys is None else self.keys.secure(ctx, [self._router, self._pub])
        self._router.setsockopt(zmq.LINGER, 0)
        # Counted and dropped above the limit; cut off by ZeroMQ itself (before it is buffered
        # whole) only beyond 4x, so a huge frame cannot exhaust memory or time.
        self._router.setsockopt(zmq.MAXMSGSIZE, 4 * self.max_message_bytes)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._pub.setsockopt(zmq.SNDHWM, 10_000)
        try:
            self.robot.connect()
        except BaseException:
            # a driver that cannot connect leaves no open sockets: a context collected later with
            # one open blocks in term() (seen: an in-process tether serve refusing an arm)
            self._router.close()
            self._pub.close()
            if auth is not None:
                auth.stop()
            ctx.term()
            raise
        try:
            self._router.bind(cmd_ep)
            self._pub.bind(state_ep)
            log.info("robot server %s at %s, %.1f Hz", self.spec.robot_type, self.address, 1 / self.period)
            freeze_gc()  # collections in the loop walk what it allocates, not the driver's imports
            self.ready.set()
            end = None if duration_s is None else time.perf_counter() + duration_s
            last = time.perf_counter()
            deadline = last + self.period
            while not stop.is_set() and (end is None or deadline < end):
                self._poll_until(deadline)
                now = time.perf_counter()
                self._tick(now - last)
                last = now
                self.stats.ticks += 1
                deadline += self.period
                if self.lockstep:  # the next tick is due one period after this one at the latest
                    deadline = time.perf_counter() + self.period
                    continue
                lag = time.perf_counter() - deadline
                if lag > 0:  # this tick overran the next deadline
                    self.stats.overruns += 1
                    if lag > self.period:  # skip whole missed periods, stay on the time grid
                        deadline += self.period * int(lag / self.period)
        finally:
            try:
                if not self._done:
                    self.robot.hold()
            finally:
                self.robot.disconnect()
                self._router.close()
                self._pub.close()
                if auth is not None:
                    auth.stop()
                ctx.term()
        return self.stats
