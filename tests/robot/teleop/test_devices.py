"""SpaceMouse and gamepad: the mapping from their libraries' readings, and a clear error when no
device is plugged in (no such device exists on a test machine). Also the factory."""

import sys

import numpy as np
import pytest

from tether.robot.drivers.pointmass import pointmass_spec
from tether.robot.teleop import DEVICES, MappingError, TeleopConfig, TeleopDevice, TeleopError, make_device
from tether.robot.teleop.config import GamepadOptions, SpaceMouseOptions
from tether.robot.teleop.gamepad import GamepadDevice, gamepad_input
from tether.robot.teleop.mapping import ActionMapper
from tether.robot.teleop.spacemouse import SpaceMouseDevice, spacemouse_input
from tether.sim.metaworld import metaworld_spec


def test_spacemouse_state_maps_to_twist_and_buttons():
    pyspacemouse = pytest.importorskip("pyspacemouse")
    state = pyspacemouse.SpaceMouseState(x=0.5, y=-1.2, z=0.05, roll=0.3, pitch=0.0, yaw=-0.4)
    state.buttons = pyspacemouse.ButtonState([1, 0])
    twist, held = spacemouse_input(state, SpaceMouseOptions())
    np.testing.assert_allclose(twist, [0.5, -1.0, 0.05, 0.3, 0.0, -0.4])
    assert held == {"gripper"}
    state.buttons = pyspacemouse.ButtonState([0, 1])
    assert spacemouse_input(state, SpaceMouseOptions())[1] == {"intervention"}
    # Through the mapper: the deadzone removes the 0.05 drift of z.
    mapper = ActionMapper(metaworld_spec(), TeleopConfig(deadzone=0.1, translation_scale=1.0))
    action = mapper.action(mapper.shape_twist(twist), None, 0.01)
    assert action[2] == 0.0 and action[0] == pytest.approx((0.5 - 0.1) / 0.9)


def test_spacemouse_without_a_device_raises_teleop_error_naming_it():
    pytest.importorskip("pyspacemouse")
    device = SpaceMouseDevice(pointmass_spec())
    with pytest.raises(TeleopError, match="spacemouse: cannot open a SpaceMouse .*hidapi"):
        device.start()
    device.stop()
    with pytest.raises(TeleopError, match="spacemouse: cannot open .*/dev/hidraw-none"):
        SpaceMouseDevice(pointmass_spec(), TeleopConfig(spacemouse=SpaceMouseOptions(path="/dev/hidraw-none"))).start()


def test_missing_library_names_the_device_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspacemouse", None)  # import pyspacemouse -> ImportError
    monkeypatch.setitem(sys.modules, "pygame", None)
    for device, lib in ((SpaceMouseDevice, "pyspacemouse"), (GamepadDevice, "pygame")):
        with pytest.raises(TeleopError, match=rf"{device.name}: the Python library '{lib}' .*pip install 'tether\[teleop\]'"):
            device(pointmass_spec()).start()


def test_gamepad_axes_buttons_and_hat_map_to_the_robot_frame():
    options = GamepadOptions()
    # Left stick pushed forward and right; right stick pulled back; D-pad up; A and LB held.
    axes = [0.6, -1.0, -1.0, 0.0, 0.8, -1.0]  # SDL: lx, ly, lt, rx, ry, rt
    buttons = [1, 0, 0, 0, 1, 0, 0, 0]
    twist, held = gamepad_input(axes, buttons, [(0, 1)], options)
    np.testing.assert_allclose(twist, [1.0, -0.6, -0.8, 0.0, 1.0, -0.0])
    assert held == {"gripper", "intervention"}
    # A pad with fewer axes and no hat reads zeros there; unbound buttons are ignored.
    twist, held = gamepad_input([0.2, 0.3], [0, 1], [], GamepadOptions(estop_button=-1))
    np.testing.assert_allclose(twist, [-0.3, -0.2, 0, 0, 0, 0])
    assert held == set()
    assert gamepad_input([0.0] * 6, [0, 1], [], options)[1] == {"estop"}


def test_gamepad_without_a_pad_raises_teleop_error_naming_it(monkeypatch):
    pytest.importorskip("pygame")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    device = GamepadDevice(pointmass_spec(), TeleopConfig(gamepad=GamepadOptions(index=3)))
    with pytest.raises(TeleopError, match=r"gamepad: no gamepad at index 3 \(0 connected\)"):
        device.start()
    device.stop()


def test_make_device_builds_each_device_and_checks_the_spec():
    spec = pointmass_spec()
    for name in ("keyboard", "spacemouse", "gamepad"):
        device = make_device(name, spec)
        assert isinstance(device, TeleopDevice) and device.name == name
    assert set(DEVICES) == {"keyboard", "spacemouse", "gamepad", "leader"}
    with pytest.raises(ValueError, match="unknown teleop device 'wiimote'"):
        make_device("wiimote", spec)
    with pytest.raises(MappingError, match="rate, not joint positions"):
        make_device("gamepad", spec, TeleopConfig(mode="joint"))


def test_teleop_imports_no_torch_and_its_optional_libraries_lazily():
    import subprocess

    code = (
        "import sys\n"
        "import tether.robot.teleop, tether.robot.teleop.keyboard, tether.robot.teleop.leader\n"
        "import tether.robot.teleop.spacemouse, tether.robot.teleop.gamepad\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pygame', 'pyspacemouse', 'easyhid'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "ok", proc.stderr
