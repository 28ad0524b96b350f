"""Real-time settings of the control-loop process, against the real Linux calls."""

import gc
import os
import subprocess
import sys

import pytest

from tether.robot.realtime import RealtimeError, freeze_gc, pin_to_cpus, set_fifo_priority


def test_pinning_to_cpus_this_process_may_use_and_refusing_others():
    before = os.sched_getaffinity(0)
    try:
        first = min(before)
        pin_to_cpus((first,))
        assert os.sched_getaffinity(0) == {first}
    finally:
        os.sched_setaffinity(0, before)
    with pytest.raises(RealtimeError, match=r"cannot pin to CPUs \[4096\]"):
        pin_to_cpus((4096,))
    with pytest.raises(RealtimeError):
        pin_to_cpus(())


def test_fifo_priority_out_of_range_is_refused_before_the_os_sees_it():
    for bad in (0, 100, -3):
        with pytest.raises(RealtimeError, match="priority must be in 1..99"):
            set_fifo_priority(bad)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_an_unprivileged_process_gets_how_to_allow_fifo():
    code = ("import os; os.setgid(65534); os.setuid(65534)\n"
            "from tether.robot.realtime import set_fifo_priority, RealtimeError\n"
            "try:\n    set_fifo_priority(10)\nexcept RealtimeError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "SCHED_FIFO priority 10 refused" in out.stdout and "CAP_SYS_NICE" in out.stdout, out.stderr


def test_freeze_gc_moves_what_is_alive_out_of_the_collectors_reach():
    try:
        freeze_gc()
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
