"""A servo bus behind a pseudo-terminal: a thread reads what the driver writes to the slave end
(the "serial port" it opens) and writes the servos' replies back."""

from __future__ import annotations

import os
import select
import threading
import tty


class PtyBus(threading.Thread):
    """Base of the emulators: ``port`` is the device path a driver opens. Subclasses implement
    ``feed(buffer) -> rest`` (consume whole packets, answer with ``reply``).

    Use as a context manager (starts the thread, ``close`` at exit), or ``start``/``close``.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self.lock = threading.RLock()  # the servos' state: the bus thread and the test share it
        self.packets = 0
        self._halt = threading.Event()
        self._closed = False

    def feed(self, buffer: bytearray) -> bytearray:
        raise NotImplementedError

    def reply(self, data: bytes) -> None:
        """Write bytes onto the bus (to the driver)."""
        try:
            os.write(self.master, data)
        except OSError:  # the port vanished
            pass

    def run(self) -> None:
        buffer = bytearray()
        try:
            while not self._halt.is_set():
                # select with a timeout, never a blocking read: a read in progress would keep the
                # master open after close(), and the driver would not see the port vanish
                ready, _, _ = select.select([self.master], [], [], 0.01)
                if not ready:
                    continue
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    return
                buffer += chunk
                with self.lock:
                    buffer = self.feed(buffer)
        finally:
            self._close_fds()

    def _close_fds(self) -> None:
        if not self._closed:
            self._closed = True
            for fd in (self.master, self._slave):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def vanish(self) -> None:
        """Unplug the adapter: the port is gone, the driver's next read or write fails."""
        self._halt.set()
        if self.is_alive():
            self.join(5)
        self._close_fds()

    close = vanish

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
