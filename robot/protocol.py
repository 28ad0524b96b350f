"""tether's wire protocol: msgpack messages with numpy arrays, versioned and validated.

Every message is one ZeroMQ frame holding a msgpack map with a common header
``{"v": PROTOCOL_VERSION, "type": str, "seq": int, "t": float}`` (``t`` is the sender's
``time.monotonic()`` in s) plus the fields of its type (see ``SCHEMA`` and ``robot/PROTOCOL.md``).
numpy arrays travel as msgpack extension type 1: a small msgpack header ``[dtype, shape]``
followed by the raw bytes, decoded with ``np.frombuffer`` (no copy; the array is read-only).

A message that is too large, not msgpack, of an unknown type or version, or missing a field,
or whose field is of the wrong type or out of its range, raises ``ProtocolError``; the server
counts and drops such messages. ``DecodeLimits`` bound a frame before and while it is decoded
(its size, msgpack's container and string lengths, arrays per message), so that no single frame
can hold the control loop for long: without them a 16 MiB frame of 16M empty arrays takes seconds.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np

from tether.robot.spec import FEATURE_DTYPES as _ALLOWED_DTYPES

if TYPE_CHECKING:
    from tether.robot.spec import RobotSpec

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_SEQ = 2**63 - 1  # seq and ref_seq are int64 counters
MAX_NAME = 256  # characters of a task or client name
MAX_REASON = 4096  # characters of an e-stop reason
_NDARRAY_EXT = 1


class ProtocolError(ValueError):
    """A message could not be decoded or does not follow the schema."""


@dataclass(frozen=True)
class Field:
    """What one field of a message may hold.

    Attributes:
        types: accepted Python types (``type(None)`` allows null). bool is never an int.
        low, high: inclusive bounds of an int or float, given together (a bounded float must
            also be finite); for a str, ``high`` alone bounds its length.
    """

    types: tuple[type, ...]
    low: float | None = None
    high: float | None = None

    def check(self, where: str, value: Any) -> None:
        """Raises ``ProtocolError`` naming ``where`` when ``value`` does not fit."""
        if isinstance(value, bool) and bool not in self.types:
            raise ProtocolError(f"{where}: got a bool")
        if not isinstance(value, self.types):
            raise ProtocolError(f"{where}: got {type(value).__name__}")
        if isinstance(value, str) and self.high is not None and len(value) > self.high:
            raise ProtocolError(f"{where}: a string of {len(value)} characters, at most {self.high}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and self.low is not None:
            if isinstance(value, float) and not math.isfinite(value):
                raise ProtocolError(f"{where}: not finite")
            if not self.low <= value <= self.high:
                raise ProtocolError(f"{where}: {value} outside [{self.low}, {self.high}]")


_NULL = type(None)
_SEQ = Field((int,), 0, MAX_SEQ)
_FINITE = Field((float,), -math.inf, math.inf)
_ANY_STR, _ANY_INT, _ANY_FLOAT = Field((str,)), Field((int,)), Field((float,))

# Field name -> what it may hold, per message type. Messages to the server are bounded: they come
# from the network (a reset's seed range is the robot's to check: the client hears why it was
# refused). Server messages are checked for type only.
SCHEMA: dict[str, dict[str, Field]] = {
    # client -> server (ROUTER)
    "hello": {"role": Field((str,), high=32), "client": Field((str,), high=MAX_NAME),
              "spec": Field((dict, _NULL))},
    "command": {"action": Field((np.ndarray,)), "ref_seq": _SEQ},
    "chunk": {"actions": Field((np.ndarray,)), "t0": _FINITE, "dt": _FINITE, "ref_seq": _SEQ},
    "reset": {"task": Field((str, _NULL), high=MAX_NAME), "seed": Field((int, _NULL))},
    "heartbeat": {},
    "estop": {"reason": Field((str,), high=MAX_REASON)},
    "clear_estop": {},
    # server -> client (ROUTER replies)
    "welcome": {"spec": Field((dict,)), "server": _ANY_STR, "session": _ANY_INT},
    "refused": {"reason": _ANY_STR},
    "reset_done": {"episode": _ANY_INT, "task": Field((str, _NULL))},
    # server -> all (PUB)
    "state": {
        "session": _ANY_INT,
        "episode": _ANY_INT,
        "step": _ANY_INT,
        "task": Field((str, _NULL)),
        "observation": Field((dict,)),
        "action": Field((np.ndarray, _NULL)),
        "reward": _ANY_FLOAT,
        "success": Field((bool,)),
        "done": Field((bool,)),
        "estop": Field((bool,)),
        "events": Field((list,)),
        "timing": Field((dict,)),
    },
}


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on one frame: its size, checked before decoding, and msgpack's limits and an
    array budget, checked while decoding (``msgpack.unpackb``'s ``max_*_len`` options).

    Attributes:
        max_bytes: the largest frame (bytes).
        max_array_len, max_map_len: entries of one msgpack array or map.
        max_str_len, max_bin_len: bytes of one string or binary.
        max_ext_len: bytes of one extension, i.e. one numpy array with its header.
        max_arrays: numpy arrays in one message (each costs a Python call to decode).
    """

    max_bytes: int = MAX_MESSAGE_BYTES
    max_array_len: int = MAX_MESSAGE_BYTES
    max_map_len: int = MAX_MESSAGE_BYTES
    max_str_len: int = MAX_MESSAGE_BYTES
    max_bin_len: int = MAX_MESSAGE_BYTES
    max_ext_len: int = MAX_MESSAGE_BYTES
    max_arrays: int | None = None

    @classmethod
    def for_robot(cls, spec: RobotSpec, max_chunk: int, cap: int = MAX_MESSAGE_BYTES,
                  handshaken: bool = True) -> DecodeLimits:
        """The limits a robot server applies to its clients' frames, sized from its spec.

        The largest frame a client needs to send is a ``hello`` carrying a spec about the size
        of the robot's (bounded at 4x that plus 4 KiB, so a policy's spec with longer names
        still passes) or, once it has said hello, a ``chunk`` of ``max_chunk`` actions. Peers
        that have not said hello get the hello bound alone. Both are capped at ``cap``.
        """
        spec_bytes = len(pack(spec.to_dict()))
        hello = 4 * spec_bytes + 4096
        action_bytes = int(np.prod(spec.action.shape)) * np.dtype(spec.action.dtype).itemsize
        chunk = max_chunk * action_bytes + 1024
        largest = max(hello, chunk) if handshaken else hello
        entries = max(256, 4 * max(len(spec.tasks), 4 * len(spec.observation),
                                   *(int(np.prod(f.shape)) for f in spec.observation.values()
                                     if not f.is_image), int(np.prod(spec.action.shape))))
        return cls(
            max_bytes=min(cap, largest), max_array_len=entries, max_map_len=entries,
            max_str_len=4 * MAX_REASON, max_bin_len=0, max_ext_len=chunk, max_arrays=2,
        )

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


def unpack(frame: bytes, limits: DecodeLimits | None = None) -> Any:
    """Inverse of ``pack`` (arrays come back read-only, without a copy).

    Args:
        frame: one message.
        limits: msgpack's length limits and the array budget; None: msgpack's defaults (each
            bounded by the frame's size), as for trusted peers.

    Raises:
        ProtocolError: a malformed array, or more arrays than ``limits.max_arrays``; msgpack's
            own errors (ValueError and its subclasses) for malformed frames or exceeded limits.
    """
    if limits is None:
        return msgpack.unpackb(frame, raw=False, ext_hook=_ext_hook, strict_map_key=True)
    hook = _ext_hook
    if limits.max_arrays is not None:
        budget = [limits.max_arrays]

        def hook(code: int, data: bytes) -> Any:
            budget[0] -= 1
            if budget[0] < 0:
                raise ProtocolError(f"more than {limits.max_arrays} arrays in one message")
            return _ext_hook(code, data)

    # Decoding allocates one Python object per msgpack item; with the garbage collector on, the
    # collections these allocations trigger take most of the time (31 ms against 5 ms for 64 KiB
    # of empty lists), and a decoded message holds no reference cycles to collect.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return msgpack.unpackb(
            frame, raw=False, ext_hook=hook, strict_map_key=True,
            max_str_len=limits.max_str_len, max_bin_len=limits.max_bin_len,
            max_array_len=limits.max_array_len, max_map_len=limits.max_map_len,
            max_ext_len=limits.max_ext_len,
        )
    finally:
        if enabled:
            gc.enable()


def encode(msg_type: str, seq: int, **fields: Any) -> bytes:
    """Encode a message of ``msg_type`` with the common header; returns one frame of bytes."""
    body = {"v": PROTOCOL_VERSION, "type": msg_type, "seq": int(seq), "t": time.monotonic()}
    body.update(fields)
    return pack(body)


def decode(frame: bytes, max_bytes: int = MAX_MESSAGE_BYTES,
           limits: DecodeLimits | None = None) -> dict[str, Any]:
    """Decode and validate one frame against ``SCHEMA``.

    Args:
        frame: the message.
        max_bytes: the largest frame accepted (``limits.max_bytes`` when ``limits`` is given).
        limits: bounds applied while decoding (see ``unpack``).

    Raises:
        ProtocolError: too large, not msgpack, over a decoding limit, wrong version, unknown type,
            missing or mistyped field, a number or string out of its range.
    """
    if limits is not None:
        max_bytes = limits.max_bytes
    if len(frame) > max_bytes:
        raise ProtocolError(f"message of {len(frame)} bytes exceeds the limit of {max_bytes}")
    try:
        msg = unpack(frame, limits)
    except ProtocolError:
        raise
    except Exception as e:
        raise ProtocolError(f"not a msgpack message: {type(e).__name__}: {e}") from e
    if not isinstance(msg, dict):
        raise ProtocolError(f"a message must be a map, got {type(msg).__name__}")
    version = msg.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:  # an array here compares per element
        raise ProtocolError(f"protocol version {msg.get('v')!r}, expected {PROTOCOL_VERSION}")
    msg_type = msg.get("type")
    schema = SCHEMA.get(msg_type) if isinstance(msg_type, str) else None
    if schema is None:
        raise ProtocolError(f"unknown message type {msg_type!r}")
    if type(msg.get("seq")) is not int or type(msg.get("t")) is not float:
        raise ProtocolError(f"{msg_type}: header needs an integer 'seq' and a float 't'")
    _SEQ.check(f"{msg_type}.seq", msg["seq"])
    for name, field in schema.items():
        if name not in msg:
            raise ProtocolError(f"{msg_type}: missing field {name!r}")
        field.check(f"{msg_type}.{name}", msg[name])
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
