"""RealSense camera without a device: configuration refusals, the enumeration error of the real
pyrealsense2 (no camera on this machine), mode checks and frame conversion on librealsense's own
software device (frames built in librealsense, matched by its syncer, aligned by ``rs.align``).
Streaming through ``rs.pipeline`` from a real device is not covered (see the module docstring)."""

import time

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2")

from tether.launch import UsageError  # noqa: E402
from tether.launch.camera_args import open_cameras  # noqa: E402
from tether.perception.cameras import CameraError, RealSenseCamera, RealSenseConfig  # noqa: E402
from tether.perception.cameras.realsense import capture_time, check_modes, select_device  # noqa: E402
from tether.robot.recorder import camera_features  # noqa: E402
from tether.robot.spec import Feature, RobotSpec  # noqa: E402

W, H, FPS = 64, 48, 30


@pytest.mark.parametrize("kwargs, message", [
    ({"width": 0}, "width must be an integer in \\[1, 4096\\], got 0"),
    ({"height": 480.0}, "height must be an integer .* got 480.0"),
    ({"width": 10000}, "width must be an integer in \\[1, 4096\\]"),
    ({"fps": 29.97}, "fps must be an integer in \\[1, 300\\], got 29.97"),
    ({"fps": 1000}, "fps must be an integer in \\[1, 300\\], got 1000"),
    ({"fps": True}, "fps must be an integer"),
    ({"serial": 819612070123}, "serial must be a string \\(a number loses leading zeros\\)"),
    ({"serial": "8196-1207"}, "serial must be 1-32 letters or digits .* got '8196-1207'"),
    ({"serial": ""}, "serial must be 1-32 letters or digits"),
    ({"depth_width": 848, "depth_height": 480}, "depth is off: set depth=True"),
    ({"depth": True, "depth_width": 848}, "give both depth_width and depth_height"),
    ({"depth": True, "depth_width": 848, "depth_height": -1}, "depth_height must be an integer"),
    ({"depth": "yes"}, "depth must be true or false"),
])
def test_bad_configuration_is_refused_before_any_device_call(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RealSenseConfig(**kwargs)


def test_features_are_colour_and_millimetre_depth_at_the_colour_size():
    cam = RealSenseCamera(RealSenseConfig(width=848, height=480, depth=True, depth_width=640,
                                          depth_height=360), name="wrist")
    assert cam.features() == {
        "observation.images.wrist": Feature("uint8", (480, 848, 3), unit="pixel"),
        "observation.depth.wrist": Feature("uint16", (480, 848), unit="mm"),
    }
    assert cam.features()["observation.images.wrist"].is_image
    assert list(RealSenseCamera(RealSenseConfig(), "top").features()) == ["observation.images.top"]


def _found() -> int:
    return len(rs.context().query_devices())


def test_no_device_with_the_serial_is_one_precise_line():
    found = _found()
    cam = RealSenseCamera(RealSenseConfig(serial="000000000000", depth=True), name="top")
    with pytest.raises(CameraError) as err:
        cam.start()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("RealSense camera 'top' (000000000000, colour 640x480@30 + depth "
                              "640x480@30): no RealSense device with serial 000000000000; "
                              f"{found} RealSense device")
    assert f"{found} RealSense device{'s' if found != 1 else ''} found" in message


def test_no_device_at_all_is_named():
    if _found():
        pytest.skip("a RealSense is connected to this machine")
    with pytest.raises(CameraError, match="^RealSense camera 'front' \\(any serial, colour 640x480@30\\): "
                       "no RealSense device connected \\(any serial\\); 0 RealSense devices found: "):
        RealSenseCamera(name="front").start()


def test_read_before_start_is_refused_and_stop_is_safe():
    cam = RealSenseCamera(name="front")
    with pytest.raises(CameraError, match="'front' .*start\\(\\) it first"):
        cam.read()
    cam.stop()


# --- librealsense's software device: real stream profiles and frames without hardware ---------

def _intrinsics(w, h, f):
    i = rs.intrinsics()
    i.width, i.height, i.ppx, i.ppy, i.fx, i.fy = w, h, w / 2, h / 2, f, f
    i.model, i.coeffs = rs.distortion.none, [0.0] * 5
    return i


class SoftwareRealSense:
    """A librealsense software device with an RGB sensor (W x H) and a depth sensor (half size,
    same field of view, identity extrinsics), feeding a syncer as a pipeline would."""

    def __init__(self, serial="123456789012", depth_units=0.001, extra_colour_modes=()):
        self.dev = rs.software_device()
        self.dev.register_info(rs.camera_info.serial_number, serial)
        self.depth_sensor = self.dev.add_sensor("Stereo Module")
        self.colour_sensor = self.dev.add_sensor("RGB Camera")
        self.depth_units = depth_units
        self.dprof = self._stream(self.depth_sensor, rs.stream.depth, 0, W // 2, H // 2, 2, rs.format.z16, 25)
        self.depth_sensor.add_read_only_option(rs.option.depth_units, depth_units)
        self.cprof = self._stream(self.colour_sensor, rs.stream.color, 1, W, H, 3, rs.format.rgb8, 50)
        for k, (w, h, fps) in enumerate(extra_colour_modes):
            self._stream(self.colour_sensor, rs.stream.color, 10 + k, w, h, 3, rs.format.rgb8, 50, fps)
        ext = rs.extrinsics()
        ext.rotation, ext.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0]
        self.dprof.register_extrinsics_to(self.cprof, ext)
        self.dev.create_matcher(rs.matchers.default)
        self._keep = []  # librealsense reads the pixels after on_video_frame returns

    @staticmethod
    def _stream(sensor, kind, uid, w, h, bpp, fmt, f, fps=FPS):
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.width, vs.height = kind, 0, uid, w, h
        vs.fps, vs.bpp, vs.fmt, vs.intrinsics = fps, bpp, fmt, _intrinsics(w, h, f)
        return sensor.add_video_stream(vs)

    def framesets(self, colours, depths, stamps_ms, domain=rs.timestamp_domain.global_time):
        """Feed frame pairs; yield each frameset holding both (a syncer's first may hold one)."""
        syncer = rs.syncer()
        self.depth_sensor.open(self.dprof)
        self.colour_sensor.open(self.cprof)
        self.depth_sensor.start(syncer)
        self.colour_sensor.start(syncer)
        try:
            for n, (image, depth, stamp) in enumerate(zip(colours, depths, stamps_ms)):
                for sensor, prof, pixels, bpp in ((self.colour_sensor, self.cprof, image, 3),
                                                  (self.depth_sensor, self.dprof, depth, 2)):
                    pixels = np.ascontiguousarray(pixels)
                    self._keep.append(pixels)
                    f = rs.software_video_frame()
                    f.pixels, f.bpp, f.stride = pixels, bpp, pixels.shape[1] * bpp
                    f.timestamp, f.domain, f.frame_number = stamp, domain, n
                    f.profile = prof.as_video_stream_profile()
                    if sensor is self.depth_sensor:
                        f.depth_units = self.depth_units
                    sensor.on_video_frame(f)
                ok, fs = syncer.try_wait_for_frames(500)
                while ok:  # a frame may come alone, or wait for the next pair (the matcher's call)
                    if fs.size() == 2:
                        yield fs
                    ok, fs = syncer.try_wait_for_frames(50)
        finally:
            for sensor in (self.colour_sensor, self.depth_sensor):
                sensor.stop()
                sensor.close()


def test_select_device_by_serial_and_refuse_ambiguity():
    a, b = SoftwareRealSense("111111111111").dev, SoftwareRealSense("222222222222").dev
    assert _serial_of(select_device([a, b], "222222222222", "cam")) == "222222222222"
    assert _serial_of(select_device([a], None, "cam")) == "111111111111"
    with pytest.raises(CameraError, match="^cam: 2 RealSense devices found \\(serials 111111111111, "
                       "222222222222\\); give the serial of the one to open$"):
        select_device([a, b], None, "cam")
    with pytest.raises(CameraError, match="^cam: no RealSense device with serial 333333333333; 2 RealSense "
                       "devices found \\(serials 111111111111, 222222222222\\): "):
        select_device([a, b], "333333333333", "cam")


def _serial_of(device):
    return device.get_info(rs.camera_info.serial_number)


def test_modes_are_checked_against_what_the_device_offers():
    dev = SoftwareRealSense(extra_colour_modes=[(128, 96, 15)]).dev
    check_modes(dev, RealSenseConfig(width=W, height=H, fps=FPS), "cam")
    check_modes(dev, RealSenseConfig(width=W, height=H, fps=FPS, depth=True, depth_width=W // 2,
                                     depth_height=H // 2), "cam")
    check_modes(dev, RealSenseConfig(width=128, height=96, fps=15), "cam")
    with pytest.raises(CameraError, match=f"^cam: colour 640x480@30 is not a mode of this device; it "
                       f"offers colour {W}x{H}@{FPS}, 128x96@15$"):
        check_modes(dev, RealSenseConfig(), "cam")
    with pytest.raises(CameraError, match=f"^cam: colour {W}x{H}@60 is not a mode"):
        check_modes(dev, RealSenseConfig(width=W, height=H, fps=60), "cam")
    with pytest.raises(CameraError, match=f"^cam: depth {W}x{H}@{FPS} is not a mode of this device; "
                       f"it offers depth {W // 2}x{H // 2}@{FPS}$"):
        check_modes(dev, RealSenseConfig(width=W, height=H, fps=FPS, depth=True), "cam")


def _scene(n):
    """Colour frames whose red channel counts the frame, and a depth map of two planes: the left
    half at 1.000 m, the right half at 2.000 m (in the device's units)."""
    colours = [np.zeros((H, W, 3), np.uint8) for _ in range(n)]
    for i, c in enumerate(colours):
        c[..., 0], c[..., 2] = 10 * (i + 1), 7
    depth = np.empty((H // 2, W // 2), np.float64)
    depth[:, : W // 4], depth[:, W // 4:] = 1.0, 2.0
    return colours, depth


@pytest.mark.parametrize("units", [0.001, 0.0001])
def test_frames_are_rgb_with_depth_aligned_to_colour_in_millimetres(units):
    device = SoftwareRealSense(depth_units=units)
    colours, depth_m = _scene(3)
    raw = np.rint(depth_m / units).astype(np.uint16)
    cam = RealSenseCamera(RealSenseConfig(width=W, height=H, fps=FPS, depth=True, depth_width=W // 2,
                                          depth_height=H // 2), name="wrist")
    stamps = [(time.time() + n / FPS) * 1000.0 for n in range(3)]  # the syncer matches by time
    frames = []
    for fs in device.framesets(colours, [raw] * 3, stamps):
        n = fs.get_color_frame().get_frame_number()
        # arrival 20 ms after the stamp on the wall clock, at 100 + n s on the monotonic clock
        frames.append(cam.to_frame(fs, 100.0 + n, stamps[n] / 1000.0 + 0.020, n))
    assert len(frames) >= 2  # the syncer may hand the very first colour frame alone
    for frame in frames:
        assert frame.image.shape == (H, W, 3) and frame.image.dtype == np.uint8
        assert frame.image[0, 0, 2] == 7 and frame.image[0, 0, 0] == 10 * (frame.index + 1)  # RGB order
        assert frame.depth.shape == (H, W) and frame.depth.dtype == np.uint16  # colour's size
        assert frame.timestamp == pytest.approx(100.0 + frame.index - 0.020, abs=1e-6)
        # aligned: the planes land on the colour image's left and right halves
        assert np.median(frame.depth[:, 4: W // 2 - 4]) == 1000
        assert np.median(frame.depth[:, W // 2 + 4: -4]) == 2000
        assert (frame.depth > 0).mean() > 0.8
    assert frames[-1].image[0, 0, 0] == 30


def test_timestamps_come_from_the_host_clock_only_when_librealsense_stamps_on_it():
    # global_time / system_time: capture time = arrival - the frame's age on the wall clock
    assert capture_time(50.0, 1000.0, 999_950.0, True) == pytest.approx(49.95)
    # the device's own clock says nothing about the host's: arrival time, as the OpenCV camera
    assert capture_time(50.0, 1000.0, 123.0, False) == 50.0
    # a wall-clock step makes the age negative or huge: arrival time, never a jump
    assert capture_time(50.0, 1000.0, 1_000_010.0, True) == 50.0
    assert capture_time(50.0, 1000.0, 990_000.0, True) == 50.0

    device = SoftwareRealSense()
    colours, depth_m = _scene(2)
    raw = np.rint(depth_m * 1000).astype(np.uint16)
    cam = RealSenseCamera(RealSenseConfig(width=W, height=H, fps=FPS), name="top")
    frames = [cam.to_frame(fs, 7.0, 1000.0, 0) for fs in
              device.framesets(colours, [raw] * 2, [123.0, 156.0], rs.timestamp_domain.hardware_clock)]
    assert frames and all(f.timestamp == 7.0 and f.depth is None for f in frames)


def test_teleop_cameras_pick_a_realsense_and_its_open_error_reaches_the_recorder():
    top, front = open_cameras(("top=realsense:000000000000", "front=realsense"), "848x480", 100.0)
    assert isinstance(top, RealSenseCamera) and top.name == "top"
    assert top.config == RealSenseConfig("000000000000", 848, 480, 30)
    assert front.config.serial is None
    with pytest.raises(UsageError, match="--cameras top=realsense:81-96: serial must be 1-32 letters"):
        open_cameras(("top=realsense:81-96",), None, 30.0)
    with pytest.raises(UsageError, match="give realsense:SERIAL or plain realsense"):
        open_cameras(("top=realsense:",), None, 30.0)
    spec = RobotSpec("arm", 30.0, {"observation.state": Feature("float32", (6,))},
                     Feature("float32", (6,)))
    with pytest.raises(CameraError, match="^RealSense camera 'top' \\(000000000000, colour 848x480@30\\): "
                       "no RealSense device with serial 000000000000; "):
        camera_features(spec, [top])
