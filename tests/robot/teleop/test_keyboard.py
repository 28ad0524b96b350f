"""The terminal keyboard device, driven through a real pseudo-terminal: the test writes key bytes to
the master side, the device reads the slave side in cbreak mode."""

import os
import termios
import time

import numpy as np
import pytest

from tether.robot.client import RobotClient
from tether.robot.drivers.pointmass import PointMassRobot, pointmass_spec
from tether.robot.teleop import TeleopConfig, TeleopError, make_device
from tether.robot.teleop.config import KeyboardOptions
from tether.robot.teleop.keyboard import KeyboardDevice, parse_keys
from tether.sim.metaworld import metaworld_spec


def keyboard(fd, spec=None, **hold):
    hold = {"first_hold_s": 0.3, "repeat_hold_s": 0.1, **hold}
    config = TeleopConfig(translation_scale=1.0, deadzone=0.0, keyboard=KeyboardOptions(fd=fd, **hold))
    return KeyboardDevice(spec or pointmass_spec(), config)


def read_until(device, predicate, timeout_s=2.0):
    """Reads until ``predicate(command)``; returns every command read (the last one matched)."""
    commands = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        commands.append(device.read(None))
        if predicate(commands[-1]):
            return commands
        time.sleep(0.005)
    raise AssertionError(f"no matching command in {timeout_s} s; last {commands[-1]}")


def test_parse_keys_names_specials_and_escape_sequences():
    keys, rest = parse_keys(b"w\x1b[A\x1bOD\r\n\x7f\x08 Q\x1b[15~\x1bx\x03")
    assert keys == ["w", "up", "left", "enter", "enter", "backspace", "backspace", "space", "Q", "unknown", "esc", "x"]
    assert rest == b""
    assert parse_keys(b"a\x1b[1;") == (["a"], b"\x1b[1;")
    assert parse_keys(b"\x1b") == ([], b"\x1b")


def test_cbreak_while_started_and_the_terminal_is_restored(pty_pair):
    _, slave = pty_pair
    before = termios.tcgetattr(slave)
    device = keyboard(slave)
    with device:
        lflag = termios.tcgetattr(slave)[3]
        assert not lflag & termios.ICANON and not lflag & termios.ECHO
        assert lflag & termios.ISIG  # Ctrl-C still interrupts
    assert termios.tcgetattr(slave) == before
    with pytest.raises(RuntimeError, match="operator code failed"):
        with keyboard(slave):
            raise RuntimeError("operator code failed")
    assert termios.tcgetattr(slave) == before


def test_keys_drive_axes_and_stop_after_the_hold_time(pty_pair):
    master, slave = pty_pair
    with keyboard(slave) as device:
        assert np.array_equal(device.read(None).action, [0.0, 0.0])
        os.write(master, b"w")
        read_until(device, lambda c: c.action[0] == 1.0)
        os.write(master, b"d")
        read_until(device, lambda c: c.action[1] == -1.0 and c.action[0] == 1.0)
        os.write(master, b"\x1b[B")  # Down arrow: -x, cancels w while both are held
        read_until(device, lambda c: c.action[0] == 0.0 and c.action[1] == -1.0)
        start = time.monotonic()
        commands = read_until(device, lambda c: not c.action.any())
        assert 0.1 < time.monotonic() - start < 0.6
        assert all(not c.events for c in commands)  # the arrow's ESC is no Esc key


def test_a_held_key_moves_smoothly_and_stops_soon_after_release(pty_pair):
    master, slave = pty_pair
    with keyboard(slave) as device:
        os.write(master, b"a")
        read_until(device, lambda c: c.action[1] == 1.0)
        # Autorepeat after a 0.2 s delay at 30 Hz, like a terminal's, for 0.6 s.
        t0 = time.monotonic()
        next_repeat = t0 + 0.2
        while time.monotonic() - t0 < 0.6:
            if time.monotonic() >= next_repeat:
                os.write(master, b"a")
                next_repeat += 1 / 30
            assert device.read(None).action[1] == 1.0
            time.sleep(0.005)
        released = time.monotonic()
        read_until(device, lambda c: c.action[1] == 0.0)
        assert time.monotonic() - released < 0.1 + 0.1  # repeat_hold_s, plus scheduling slack


def test_episode_keys_fire_once_and_intervention_toggles(pty_pair):
    master, slave = pty_pair
    with keyboard(slave) as device:
        os.write(master, b"\r\r\r")  # Enter held: autorepeat
        commands = read_until(device, lambda c: c.events)
        assert commands[-1].events == ("end_episode",)
        time.sleep(0.05)
        assert device.read(None).events == ()
        os.write(master, b" ")
        assert read_until(device, lambda c: c.events)[-1].events == ("estop",)
        os.write(master, b"x\x7f")
        assert read_until(device, lambda c: c.events)[-1].events == ("rerecord",)
        os.write(master, b"Q")
        assert read_until(device, lambda c: c.events)[-1].events == ("stop",)
        time.sleep(0.35)  # Q's hold ends
        device.read(None)
        os.write(master, b"\x1b")  # a lone Esc (no sequence follows) is stop too
        assert read_until(device, lambda c: c.events)[-1].events == ("stop",)
        assert not device.read(None).intervention
        os.write(master, b"t")
        read_until(device, lambda c: c.intervention)
        time.sleep(0.35)
        assert device.read(None).intervention  # a toggle, not a hold
        os.write(master, b"t")
        read_until(device, lambda c: not c.intervention)


def test_gripper_toggle_on_metaworld(pty_pair):
    master, slave = pty_pair
    with keyboard(slave, metaworld_spec()) as device:
        assert device.read(None).action[3] == -1.0  # open
        os.write(master, b"g")
        read_until(device, lambda c: c.action[3] == 1.0)


def test_not_a_terminal_and_a_vanished_terminal_raise_teleop_error(pty_pair):
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(TeleopError, match="keyboard: file descriptor .* is not a terminal"):
            keyboard(read_end).start()
    finally:
        os.close(read_end)
        os.close(write_end)
    master, slave = pty_pair
    device = keyboard(slave)
    device.start()
    os.close(master)  # the SSH session dropped
    with pytest.raises(TeleopError, match="went away"):
        device.read(None)


def test_keyboard_drives_a_robot_server_and_ends_the_episode(pty_pair, serve):
    master, slave = pty_pair
    config = TeleopConfig(translation_scale=1.0, keyboard=KeyboardOptions(fd=slave, first_hold_s=0.3, repeat_hold_s=0.1))
    with serve(PointMassRobot(rate_hz=100.0, max_episode_steps=10_000)) as server:
        with RobotClient(server.address) as client, make_device("keyboard", client.spec, config) as device:
            state = client.reset("reach-origin", 0)
            x0 = float(state["observation"]["observation.state"][0])
            os.write(master, b"w")
            events = []
            t0 = time.monotonic()
            while time.monotonic() - t0 < 0.8:
                if time.monotonic() - t0 > 0.5 and not events:
                    os.write(master, b"\r")
                command = device.read(state)
                client.send_action(command.action, state["seq"])
                events += command.events
                state = client.latest_state()
                if events:
                    break
    x1 = float(state["observation"]["observation.state"][0])
    assert x1 - x0 > 0.1, (x0, x1)  # ~0.3 s at up to 1 m/s
    assert events == ["end_episode"]
