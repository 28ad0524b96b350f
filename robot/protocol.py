"""tether's wire protocol: msgpack messages with numpy arrays, versioned and validated.

Every message is one ZeroMQ frame holding a msgpack map with a common header
``{"v": PROTOCOL_VERSION, "type": str, "seq": int, "t": float}`` (``t`` is the sender's
``time.monotonic()`` in s) plus the fields of its type (see ``SCHEMA`` and ``robot/PROTOCOL.md``).
numpy arrays travel as msgpack extension type 1: a small msgpack header ``[dtype, shape]``
followed by the raw bytes, decoded with ``np.frombuffer`` (no copy; the array is read-only).

A message that is too large, not msgpack, of an unknown type or version, or missing a field
raises ``ProtocolError``; the server counts and drops such messages.
"""

from __future__ import annotations

import time
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_NDARRAY_EXT = 1
_ALLOWED_DTYPES = {"float32", "float64", "uint8", "int32", "int64", "bool", "uint16"}


class ProtocolError(ValueError):
    """A message could not be decoded or does not follow the schema."""


# Field name -> accepted Python types, per message type. ``None`` in a tuple allows null.
SCHEMA: dict[str, dict[str, tuple[type | None, ...]]] = {
    # client -> server (ROUTER)
    "hello": {"role": (str,), "client": (str,), "spec": (dict, type(None))},
    "command": {"action": (np.ndarray,), "ref_seq": (int,)},
    "chunk": {"actions": (np.ndarray,), "t0": (float,), "dt": (float,), "ref_seq": (int,)},
    "reset": {"task": (str, type(None)), "seed": (int, type(None))},
    "heartbeat": {},
    "estop": {"reason": (str,)},
    "clear_estop": {},
    # server -> client (ROUTER replies)
    "welcome": {"spec": (dict,), "server": (str,), "session": (int,)},
    "refused": {"reason": (str,)},
    "reset_done": {"episode": (int,), "task": (str, type(None))},
    # server -> all (PUB)
    "state": {
        "session": (int,),
        "episode": (int,),
        "step": (int,),
        "task": (str, type(None)),
        "observation": (dict,),
        "action": (np.ndarray, type(None)),
        "reward": (float,),
        "success": (bool,),
        "done": (bool,),
        "estop": (bool,),
        "events": (list,),
        "timing": (dict,),
    },
}

ROLES = ("controller", "observer")


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.name not in _ALLOWED_DTYPES:
            raise TypeError(f"arrays of dtype {obj.dtype} are not sent")
        header = msgpack.packb([obj.dtype.name, list(obj.shape)])
        return msgpack.ExtType(_NDARRAY_EXT, header + np.ascontiguousarray(obj).tobytes())
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code != _NDARRAY_EXT:
        raise ProtocolError(f"unknown extension type {code}")
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(data))
    unpacker.feed(data)
    try:
        dtype, shape = unpacker.unpack()
        offset = unpacker.tell()
        if dtype not in _ALLOWED_DTYPES or not isinstance(shape, list):
            raise ProtocolError(f"bad array header {dtype!r} {shape!r}")
        array = np.frombuffer(data, dtype=np.dtype(dtype), offset=offset)
        return array.reshape([int(s) for s in shape])
    except ProtocolError:
        raise
    except Exception as e:  # any malformed header or size mismatch
        raise ProtocolError(f"bad array payload: {e}") from e


def pack(obj: Any) -> bytes:
    """msgpack with tether's array extension (type 1): the one wire format for arrays, shared by
    the robot link and the actor-learner link.

    Raises:
        TypeError: an object msgpack cannot encode, or an array of a dtype that is not sent.
    """
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def unpack(frame: bytes) -> Any:
    """Inverse of ``pack`` (arrays come back read-only, without a copy).

    Raises:
        ProtocolError: a malformed array; msgpack's own errors for malformed frames.
    """
    return msgpack.unpackb(frame, raw=False, ext_hook=_ext_hook, strict_map_key=True)


def encode(msg_type: str, seq: int, **fields: Any) -> bytes:
    """Encode a message of ``msg_type`` with the common header; returns one frame of bytes."""
    body = {"v": PROTOCOL_VERSION, "type": msg_type, "seq": int(seq), "t": time.monotonic()}
    body.update(fields)
    return pack(body)


def decode(frame: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Decode and validate one frame.

    Raises:
        ProtocolError: too large, not msgpack, wrong version, unknown type, missing/mistyped field.
    """
    if len(frame) > max_bytes:
        raise ProtocolError(f"message of {len(frame)} bytes exceeds the limit of {max_bytes}")
    try:
        msg = unpack(frame)
    except ProtocolError:
        raise
    except Exception as e:
        raise ProtocolError(f"not a msgpack message: {type(e).__name__}: {e}") from e
    if not isinstance(msg, dict):
        raise ProtocolError(f"a message must be a map, got {type(msg).__name__}")
    if msg.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {msg.get('v')!r}, expected {PROTOCOL_VERSION}")
    msg_type = msg.get("type")
    schema = SCHEMA.get(msg_type) if isinstance(msg_type, str) else None
    if schema is None:
        raise ProtocolError(f"unknown message type {msg_type!r}")
    if type(msg.get("seq")) is not int or type(msg.get("t")) is not float:
        raise ProtocolError(f"{msg_type}: header needs an integer 'seq' and a float 't'")
    for name, types in schema.items():
        if name not in msg:
            raise ProtocolError(f"{msg_type}: missing field {name!r}")
        value = msg[name]
        # bool is an int subclass: never accept it where an int is wanted, and vice versa
        if isinstance(value, bool) and bool not in types:
            raise ProtocolError(f"{msg_type}.{name}: got a bool")
        if not isinstance(value, tuple(t for t in types if t is not None)):
            raise ProtocolError(f"{msg_type}.{name}: got {type(value).__name__}")
    return msg


def endpoints(address: str) -> tuple[str, str]:
    """The two ZeroMQ endpoints of a robot server at ``address``: (commands, state).

    ``tcp://HOST:PORT`` uses PORT for the ROUTER (handshake, commands, resets) and PORT + 1 for the
    PUB (state); ``ipc://PATH`` uses ``PATH.cmd`` and ``PATH.state``.

    Raises:
        ValueError: for any other form of address.
    """
    if address.startswith("tcp://"):
        host, sep, port = address[len("tcp://") :].rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"expected tcp://HOST:PORT, got {address!r}")
        return f"tcp://{host}:{int(port)}", f"tcp://{host}:{int(port) + 1}"
    if address.startswith("ipc://") and len(address) > len("ipc://"):
        return f"{address}.cmd", f"{address}.state"
    raise ValueError(f"a robot address is tcp://HOST:PORT or ipc://PATH, got {address!r}")
