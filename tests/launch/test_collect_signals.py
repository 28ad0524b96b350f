"""Killing ``tether collect`` does not leave its ``tether serve`` child running (issue 26).

SIGTERM and SIGINT stop the collector through its ``finally`` (the server is asked to stop and
holds the robot first); SIGKILL runs nothing in the collector, so the server's own death signal
(``PR_SET_PDEATHSIG``, set by ``tether.launch.processes.die_with_parent``) stops it. Real
processes: the collector is a ``tether collect`` subprocess, and only its pid is signalled (not
its process group, which would reach the server directly).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tether.launch import processes


def children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child its new parent has not reaped)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def episodes(dataset) -> int:
    try:
        return json.loads((dataset / "meta/info.json").read_text())["total_episodes"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG are Linux's")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_killed_collect_leaves_no_server_running(tmp_path, sig):
    dataset = tmp_path / "ds"
    collect = subprocess.Popen(
        [sys.executable, "-m", "tether.launch.cli", "collect", str(dataset), "--tasks", "reach-v3",
         "--episodes", "100", "--image-size", "32", "--max-episode-steps", "10"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while episodes(dataset) < 1 and time.monotonic() < deadline:  # the server serves and records
            assert collect.poll() is None, collect.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        (server,) = children(collect.pid)
        os.kill(collect.pid, sig)
        code = collect.wait(30)
        log = tmp_path / "logs/serve-collect.log"
        assert code == {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGKILL: -9}[sig], log.read_text()[-3000:]
        deadline = time.monotonic() + 30
        while alive(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(server), (f"tether serve (pid {server}) outlived tether collect killed by "
                                   f"{sig.name}: {log.read_text()[-3000:]}")
        # it stopped as on Ctrl-C: the robot held, the server's counters logged
        assert "stopped: ServerStats" in log.read_text(), log.read_text()[-3000:]
        if sig != signal.SIGKILL:
            assert "Traceback" not in collect.stderr.read().decode()
    finally:
        if collect.poll() is None:
            collect.kill()
            collect.wait()


def test_a_child_of_a_dead_parent_stops_at_once(tmp_path):
    """The race ``die_with_parent`` closes: a parent that dies before its child set the death
    signal. The child then sees another parent pid and stops (exit code 130, as on Ctrl-C)."""
    env = {**os.environ, processes.PARENT_ENV: "1" if os.getpid() != 1 else "2"}
    child = subprocess.run(processes.tether_command("keys", "--help"), env=env, capture_output=True,
                           text=True, timeout=60)
    assert child.returncode == 130 and "Traceback" not in child.stderr
    env.pop(processes.PARENT_ENV)  # not started by processes.start: nothing changes
    assert subprocess.run(processes.tether_command("keys", "--help"), env=env, capture_output=True,
                          timeout=60).returncode == 0



CHILD = """
import signal, sys, time
from tether.launch import processes
interrupts = []
armed = processes.die_with_parent()
signal.signal(signal.SIGINT, lambda *_: interrupts.append(time.monotonic()))
open(sys.argv[1] + ".ready", "w").write(str(armed))
time.sleep(2)
open(sys.argv[1], "w").write(str(len(interrupts)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_repeated_death_signals_give_one_interrupt(tmp_path):
    """Linux sends the death signal again each time the orphan passes from one dying thread of
    its parent to the next; a second SIGINT landing while the first is handled deadlocks a
    handler that is not reentrant (tether serve's sets a threading.Event: a collect test once
    left such a server behind). The child turns any number of death signals into one SIGINT."""
    out = tmp_path / "interrupts"
    env = {**os.environ, processes.PARENT_ENV: str(os.getpid())}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "interrupts.ready").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (tmp_path / "interrupts.ready").read_text() == "True"
        for _ in range(3):  # as Linux does when the parent's threads die one after the other
            os.kill(child.pid, processes.DEATH_SIGNAL)
            time.sleep(0.1)
        assert child.wait(30) == 0 and out.read_text() == "1"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
