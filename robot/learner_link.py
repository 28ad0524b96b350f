"""The actor-learner link of online fine-tuning: message schema and encoding (no torch).

Sockets: the learner binds one ROUTER (``tcp://HOST:PORT`` or ``ipc://PATH``); every actor
connects one DEALER. Why DEALER/ROUTER rather than PUSH/PULL for transitions plus PUB/SUB for
weights: one connection carries both directions; the learner answers the actor that asked, so a
newly started (or restarted) actor gets the current weights at once, where a PUB would drop them
for a subscriber that joins late; several actors can feed one learner (the ROUTER fair-queues
them); and ZeroMQ re-establishes the connection by itself when either side restarts. The actor
never blocks on the learner: it sends with NOBLOCK and counts what its send queue (SNDHWM) could
not take while the learner is away.

Messages (msgpack maps, numpy arrays encoded as in ``tether.robot.protocol``; header
``{"v": LINK_VERSION, "type", "seq", "t"}``):

| type | direction | fields |
|---|---|---|
| ``actor_hello`` | actor -> learner, every ``heartbeat_s`` | ``actor`` name, ``session`` (random per actor start), ``version`` of the weights it runs (-1: none), ``learner`` session those came from (0: none), ``spec`` the robot's, ``transitions`` sent so far |
| ``transitions`` | actor -> learner | ``actor``, ``session``, ``episode`` (the actor's count), ``task``, ``obs`` [K, S] float32, ``action`` [K, A] float32 (as applied by the robot, after its safety layer), ``reward`` [K] float32, ``next_obs`` [K, S], ``terminal`` [K] bool (ended by the task: no bootstrap), ``version`` [K] int64 (weights that acted), ``intervention`` [K] bool (a human's action), ``episode_end``: null, or at an episode's last chunk ``{success, return, length, interventions, version}`` |
| ``weights`` | learner -> actor | ``session`` (random per learner start), ``version`` (increasing), ``onnx`` (bytes of a tether ONNX policy with its spec), ``updates`` (gradient steps so far) |
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tether.robot import protocol

LINK_VERSION = 1
MAX_LINK_BYTES = 64 * 1024 * 1024
"""Largest frame accepted (an ONNX policy of a few million parameters fits)."""

_ARRAY = (np.ndarray,)
SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "actor_hello": {"actor": (str,), "session": (int,), "version": (int,), "learner": (int,),
                    "spec": (dict,), "transitions": (int,)},
    "transitions": {"actor": (str,), "session": (int,), "episode": (int,), "task": (str, type(None)),
                    "obs": _ARRAY, "action": _ARRAY, "reward": _ARRAY, "next_obs": _ARRAY,
                    "terminal": _ARRAY, "version": _ARRAY, "intervention": _ARRAY,
                    "episode_end": (dict, type(None))},
    "weights": {"session": (int,), "version": (int,), "onnx": (bytes,), "updates": (int,)},
}


class LinkError(ValueError):
    """A link message could not be decoded or does not follow ``SCHEMA``."""


def encode(msg_type: str, seq: int, **fields: Any) -> bytes:
    """One frame: the header and ``fields``.

    Raises:
        LinkError: an unknown message type or a missing field (a sender's bug, caught here).
    """
    schema = SCHEMA.get(msg_type)
    if schema is None:
        raise LinkError(f"unknown link message type {msg_type!r}")
    missing = set(schema) - set(fields)
    if missing:
        raise LinkError(f"{msg_type}: missing {sorted(missing)}")
    body = {"v": LINK_VERSION, "type": msg_type, "seq": int(seq), "t": time.monotonic(), **fields}
    # the robot protocol's array encoding: one wire format for arrays across tether
    return protocol.pack(body)


def decode(frame: bytes) -> dict[str, Any]:
    """Decode and validate one frame.

    Raises:
        LinkError: too large, not msgpack, another version, unknown type, missing or mistyped
            field, or ``transitions`` arrays whose lengths differ.
    """
    if len(frame) > MAX_LINK_BYTES:
        raise LinkError(f"link message of {len(frame)} bytes exceeds {MAX_LINK_BYTES}")
    try:
        msg = protocol.unpack(frame)
    except Exception as e:
        raise LinkError(f"not a link message: {type(e).__name__}: {e}") from e
    if not isinstance(msg, dict) or msg.get("v") != LINK_VERSION:
        raise LinkError(f"not a version-{LINK_VERSION} link message")
    schema = SCHEMA.get(msg.get("type")) if isinstance(msg.get("type"), str) else None
    if schema is None:
        raise LinkError(f"unknown link message type {msg.get('type')!r}")
    for name, types in schema.items():
        if name not in msg:
            raise LinkError(f"{msg['type']}: missing field {name!r}")
        if isinstance(msg[name], bool) or not isinstance(msg[name], types):
            raise LinkError(f"{msg['type']}.{name}: got {type(msg[name]).__name__}")
    if msg["type"] == "transitions":
        k = len(msg["obs"])
        lengths = {name: len(msg[name]) for name in ("action", "reward", "next_obs", "terminal", "version",
                                                        "intervention")}
        if any(n != k for n in lengths.values()):
            raise LinkError(f"transitions: {k} observations but lengths {lengths}")
    return msg
