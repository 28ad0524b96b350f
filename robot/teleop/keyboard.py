"""Keyboard teleoperation from a terminal: works over SSH and on a bare console, no display.

The terminal is put in cbreak mode (``tty.setcbreak``: no line buffering, no echo; signals and
output processing stay on, so Ctrl-C still interrupts and log lines still print) and polled with
``select``; ``stop()`` restores the saved mode, and so does an exit of the interpreter (``atexit``).
Python docs: ``termios``, ``tty``, ``select``.

Terminals send key presses, never key releases. A press drives its axis for
``KeyboardOptions.first_hold_s`` (longer than the autorepeat delay, so holding a key moves
smoothly); each autorepeat extends it by ``repeat_hold_s``; so a held key moves the robot and
stops within ``repeat_hold_s`` of its release, and a single tap moves it for ``first_hold_s``.
For the same reason the intervention key toggles, and an event key held down fires once.

Key bindings (robot frame: x forward, y left, z up):

=================  =====================================================
w / s, Up / Down   +x / -x
a / d, Left/Right  +y / -y
r / f              +z / -z
u / o              +roll / -roll
i / k              +pitch / -pitch
j / l              +yaw / -yaw
g                  gripper: toggle open / closed
t                  intervention: toggle on / off
b                  joint mode: drive the next bank of 6 joints
Enter              end_episode (keep it, start the next)
Backspace or x     rerecord (discard the episode, record it again)
Esc or Q           stop the session
Space              estop (trip the robot server's e-stop)
=================  =====================================================
"""

from __future__ import annotations

import atexit
import os
import select
import termios
import time
import tty

import numpy as np

from tether.robot.spec import RobotSpec
from tether.robot.teleop.base import (
    END_EPISODE,
    ESTOP,
    GRIPPER,
    INTERVENTION,
    JOINT_BANK,
    RERECORD,
    STOP,
    TeleopError,
)
from tether.robot.teleop.config import TeleopConfig
from tether.robot.teleop.mapping import AxesDevice

# key -> (twist axis, direction)
KEY_AXES: dict[str, tuple[int, float]] = {
    "w": (0, 1.0), "s": (0, -1.0), "up": (0, 1.0), "down": (0, -1.0),
    "a": (1, 1.0), "d": (1, -1.0), "left": (1, 1.0), "right": (1, -1.0),
    "r": (2, 1.0), "f": (2, -1.0),
    "u": (3, 1.0), "o": (3, -1.0),
    "i": (4, 1.0), "k": (4, -1.0),
    "j": (5, 1.0), "l": (5, -1.0),
}  # fmt: skip
# key -> logical button (base.BUTTONS)
KEY_BUTTONS: dict[str, str] = {
    "g": GRIPPER,
    "t": INTERVENTION,
    "b": JOINT_BANK,
    "enter": END_EPISODE,
    "backspace": RERECORD,
    "x": RERECORD,
    "esc": STOP,
    "Q": STOP,
    "space": ESTOP,
}

_SPECIAL = {b"\r": "enter", b"\n": "enter", b"\x7f": "backspace", b"\x08": "backspace", b" ": "space"}
_CSI_FINAL = {b"A": "up", b"B": "down", b"C": "right", b"D": "left"}


def parse_keys(data: bytes) -> tuple[list[str], bytes]:
    """Split terminal input into key names.

    Printable ASCII gives the character (``"w"``, ``"Q"``); Enter, Backspace, Space, Esc and the
    arrow keys (ANSI ``ESC [ A``..``D`` and ``ESC O A``..``D``) give ``"enter"``, ``"backspace"``,
    ``"space"``, ``"esc"``, ``"up"``, ``"down"``, ``"left"``, ``"right"``; other escape sequences
    (function keys) give ``"unknown"``; other bytes are dropped.

    Returns:
        (keys, rest): ``rest`` is an escape sequence cut off at the end of ``data`` (its remaining
        bytes may still be on the way): put it in front of the next bytes read, or count it as
        the Esc key when no more bytes come.
    """
    keys: list[str] = []
    i = 0
    while i < len(data):
        byte = data[i : i + 1]
        if byte == b"\x1b":
            if i + 1 >= len(data):
                return keys, data[i:]
            if data[i + 1 : i + 2] in (b"[", b"O"):
                # A CSI / SS3 sequence: parameter and intermediate bytes 0x20-0x3F, one final byte.
                j = i + 2
                while j < len(data) and 0x20 <= data[j] <= 0x3F:
                    j += 1
                if j >= len(data):
                    return keys, data[i:]
                keys.append(_CSI_FINAL.get(data[j : j + 1], "unknown"))
                i = j + 1
                continue
            keys.append("esc")
        elif byte in _SPECIAL:
            keys.append(_SPECIAL[byte])
        elif 0x21 <= data[i] <= 0x7E:
            keys.append(byte.decode("ascii"))
        i += 1
    return keys, b""


class KeyboardDevice(AxesDevice):
    """Terminal keyboard teleop device (bindings and the hold-time model: module docstring).

    Args:
        spec: the robot's spec (None: buttons only, an empty action).
        config: mapping settings; ``config.keyboard`` has the terminal's fd and hold times.

    Raises:
        MappingError: the spec's action cannot be mapped (at construction).
        TeleopError: from ``start`` when the fd is not a terminal; from ``read`` when the
            terminal went away.
    """

    name = "keyboard"

    def __init__(self, spec: RobotSpec | None, config: TeleopConfig | None = None):
        super().__init__(spec, config, intervention="toggle")
        opts = self.config.keyboard
        self.fd = 0 if opts.fd is None else opts.fd  # 0: the process' standard input
        self._saved: list | None = None
        self._until: dict[str, float] = {}  # key -> monotonic time its press stops acting
        self._pending = b""

    def start(self) -> None:
        """Put the terminal in cbreak mode. Raises ``TeleopError`` if the fd is not a terminal."""
        if not os.isatty(self.fd):
            raise TeleopError(
                f"keyboard: file descriptor {self.fd} is not a terminal; run in an interactive "
                "terminal (ssh -t for a remote one), not with input from a pipe or a file"
            )
        if self._saved is None:
            self._saved = termios.tcgetattr(self.fd)
            atexit.register(self.stop)
        tty.setcbreak(self.fd, termios.TCSANOW)

    def stop(self) -> None:
        """Restore the terminal mode saved by ``start`` (safe to call twice)."""
        if self._saved is not None:
            saved, self._saved = self._saved, None
            atexit.unregister(self.stop)
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)
            except termios.error:
                pass  # the terminal is gone: nothing left to restore

    def _read_bytes(self, timeout_s: float) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return b""
        data = os.read(self.fd, 1024)
        if not data:
            raise OSError("end of input")
        return data

    def _keys(self) -> list[str]:
        try:
            data = self._pending + self._read_bytes(0.0)
            keys, self._pending = parse_keys(data)
            if self._pending:
                more = self._read_bytes(self.config.keyboard.escape_timeout_s)
                keys2, self._pending = parse_keys(self._pending + more)
                keys += keys2
                if self._pending:  # nothing completed it: a lone Esc
                    keys.append("esc")
                    self._pending = b""
        except OSError as e:
            self.stop()
            raise TeleopError(f"keyboard: the terminal on fd {self.fd} went away ({e})") from e
        return keys

    def _poll(self) -> tuple[np.ndarray, set[str], set[str]]:
        now = time.monotonic()
        opts = self.config.keyboard
        for key in self._keys():
            if key in KEY_AXES or key in KEY_BUTTONS:
                active = self._until.get(key, 0.0) > now
                self._until[key] = now + (opts.repeat_hold_s if active else opts.first_hold_s)
        held = {k for k, t in self._until.items() if t > now}
        twist = np.zeros(6)
        for key in held:
            if key in KEY_AXES:
                axis, direction = KEY_AXES[key]
                twist[axis] += direction
        buttons = {KEY_BUTTONS[k] for k in held if k in KEY_BUTTONS}
        return np.clip(twist, -1.0, 1.0), buttons, set()

    def read(self, state: dict | None):
        """See ``TeleopDevice.read``; restores the terminal before any error propagates."""
        try:
            return super().read(state)
        except BaseException:
            self.stop()
            raise
