"""Real-time settings of a control-loop process: CPU affinity, ``SCHED_FIFO`` priority and a
frozen garbage collector.

A Python loop at 500 Hz-1 kHz loses ticks to three things the interpreter does not control: the
scheduler moving it between cores or running another process on its core, normal-priority
scheduling behind busier processes, and garbage collections walking every object the process
imported. ``pin_to_cpus`` and ``set_fifo_priority`` are the Linux calls that polymetis and
libfranka's examples ask for (``taskset``, ``chrt -f``); ``freeze_gc`` moves everything alive at
start-up out of the collector's reach (``gc.freeze``, Python >= 3.7), so a collection during the
loop only walks what the loop allocated.
"""

from __future__ import annotations

import gc
import os


class RealtimeError(RuntimeError):
    """A real-time setting the operating system refused (the message says how to permit it)."""


def pin_to_cpus(cpus: tuple[int, ...]) -> None:
    """Run this process on ``cpus`` only (Linux ``sched_setaffinity``).

    Raises:
        RealtimeError: no such CPUs, or the platform has no affinity call.
    """
    if not hasattr(os, "sched_setaffinity"):
        raise RealtimeError("CPU affinity needs Linux (os.sched_setaffinity)")
    available = sorted(os.sched_getaffinity(0))
    missing = [c for c in cpus if c not in available]
    if not cpus or missing:
        raise RealtimeError(f"cannot pin to CPUs {list(cpus)}: this process may use CPUs {available}")
    os.sched_setaffinity(0, set(cpus))


def set_fifo_priority(priority: int) -> None:
    """Schedule this process ``SCHED_FIFO`` at ``priority`` (1-99): it runs before every
    normal process whenever it is ready.

    Raises:
        RealtimeError: a priority outside 1..99, or the OS refused (without CAP_SYS_NICE or an
            rtprio limit): the message says how to allow it.
    """
    if not hasattr(os, "sched_setscheduler"):
        raise RealtimeError("SCHED_FIFO needs Linux (os.sched_setscheduler)")
    low, high = os.sched_get_priority_min(os.SCHED_FIFO), os.sched_get_priority_max(os.SCHED_FIFO)
    if not low <= priority <= high:
        raise RealtimeError(f"SCHED_FIFO priority must be in {low}..{high}, got {priority}")
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError as e:
        raise RealtimeError(
            f"SCHED_FIFO priority {priority} refused ({e.strerror}): run as root, give the "
            "interpreter CAP_SYS_NICE (sudo setcap cap_sys_nice+ep $(readlink -f $(which python))), "
            "or allow it in /etc/security/limits.conf (@realtime - rtprio 99) and log in again"
        ) from e


def freeze_gc() -> None:
    """Collect once, then move every object alive now to the permanent generation
    (``gc.freeze``): later collections skip them (the libraries a driver imported)."""
    gc.collect()
    gc.freeze()
