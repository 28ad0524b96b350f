"""Intel RealSense cameras (D400 family and others librealsense drives) through ``pyrealsense2``.

Colour is RGB (``rs.format.rgb8``), delivered as ``Frame.image`` like every tether camera. Depth is
optional and its own feature: with ``RealSenseConfig(depth=True)`` each frame also carries
``Frame.depth``, uint16 [height, width] in **millimetres** (0 where the camera measured nothing),
aligned to the colour image pixel for pixel by ``rs.align(rs.stream.color)``. Millimetres in
uint16 are what the sensor gives (a D400's depth unit is 1 mm by default; another unit is
rescaled), cover 0-65.5 m exactly and take half the memory of float32 metres.

``Frame.timestamp`` is on ``time.monotonic()`` like the OpenCV camera's, so the recorder matches
frames to control ticks the same way. It is the frame's capture time when librealsense stamps it
on the host's clock (``global_time``, a D400's default, or ``system_time``): the frame's age on
the wall clock at arrival is subtracted from the arrival time. A frame stamped only on the
device's own clock (``hardware_clock``) gets its arrival time, as an OpenCV frame does.

Selecting a device: ``serial`` (the number printed on the camera and listed by
``rs-enumerate-devices``); without one, the only RealSense connected, and an error naming the
serials when there are several. Colour (and depth) resolution and fps are checked against the
modes the device offers before streaming, and a refusal lists them.

Set-up (Linux): ``pip install 'tether[realsense]'`` (the pyrealsense2 wheel bundles
librealsense and talks to the camera through libusb); install librealsense's udev rules
(``99-realsense-libusb.rules`` from the librealsense repository, into ``/etc/udev/rules.d/``,
then ``sudo udevadm control --reload-rules && sudo udevadm trigger``) so the camera opens without
root; use a USB 3 port and cable (over USB 2 a D435 offers only low resolutions and rates).

Tested without a device (tests/perception/test_realsense.py): configuration refusals, the
device-enumeration errors, mode checks against a librealsense software device's stream
profiles, and the frame conversion (RGB, aligned millimetre depth, timestamps) on framesets
that a librealsense syncer built from software-device frames. **Untested without a device:**
streaming through ``rs.pipeline`` (start, the capture thread, a camera unplugged mid-stream),
timestamps from a real device's clock (that a D400's ``global_time`` really is the host's wall
clock within a few ms), and depth alignment with a real camera's intrinsics and extrinsics.

Source: librealsense Python wrapper docs (``pyrealsense2``: pipeline, config, align,
software_device), https://dev.intelrealsense.com/docs/python2.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tether.perception.cameras.base import CameraError, Frame, ThreadedCamera

if TYPE_CHECKING:
    from tether.robot.spec import Feature

log = logging.getLogger(__name__)

MAX_SIDE = 4096  # no RealSense stream is wider or taller than 1920 px: a larger value is a typo
MAX_FPS = 300  # the fastest RealSense mode (D400 depth at 848x100)
# The wall clock may step (NTP) between a frame's stamp and its arrival: an age outside this
# range is a clock disagreement, not latency, and the arrival time is used instead.
MAX_FRAME_AGE_S = 1.0
_SERIAL = re.compile(r"[0-9A-Za-z]{1,32}")


def _rs():
    try:
        import pyrealsense2 as rs
    except ModuleNotFoundError:
        raise CameraError("RealSense cameras need pyrealsense2: pip install 'tether[realsense]'") from None
    except ImportError as e:  # installed, but a system library it links is missing
        raise CameraError(f"pyrealsense2 is installed but does not load: {e} (librealsense needs libusb-1.0: "
                          "apt-get install libusb-1.0-0)") from None
    return rs


@dataclass(frozen=True)
class RealSenseConfig:
    """What to open: which device, colour size and rate, and whether to stream depth.

    Attributes:
        serial: the device's serial number as a string (leading zeros matter), e.g.
            ``"819612070123"``; None: the only RealSense connected.
        width, height: colour resolution (px); must be a mode the device offers, e.g. 640x480.
        fps: colour (and depth) frame rate (Hz), e.g. 6, 15, 30 or 60 on a D435.
        depth: also stream depth, aligned to colour (``Frame.depth``, uint16 mm).
        depth_width, depth_height: the depth stream's own resolution before alignment (the
            aligned depth always has the colour's size); None for both: the colour's.

    Raises:
        ValueError: a size or rate that is not a positive integer in range, a serial that is not
            1-32 letters or digits (or is given as a number), or depth sizes without ``depth``
            or only one of them. Nothing here touches a device.
    """

    serial: str | None = None
    width: int = 640
    height: int = 480
    fps: int = 30
    depth: bool = False
    depth_width: int | None = None
    depth_height: int | None = None

    def __post_init__(self) -> None:
        if self.serial is not None:
            if not isinstance(self.serial, str):
                raise ValueError(f"serial must be a string (a number loses leading zeros), got "
                                 f"{type(self.serial).__name__} {self.serial!r}")
            if not _SERIAL.fullmatch(self.serial):
                raise ValueError(f"serial must be 1-32 letters or digits as rs-enumerate-devices "
                                 f"prints it, got {self.serial!r}")
        for name, top in (("width", MAX_SIDE), ("height", MAX_SIDE), ("fps", MAX_FPS)):
            _check_int(name, getattr(self, name), top)
        if not isinstance(self.depth, bool):
            raise ValueError(f"depth must be true or false, got {self.depth!r}")
        sizes = (self.depth_width, self.depth_height)
        if any(s is not None for s in sizes):
            if not self.depth:
                raise ValueError("depth_width/depth_height set but depth is off: set depth=True")
            if any(s is None for s in sizes):
                raise ValueError("give both depth_width and depth_height, or neither (the colour's size)")
            _check_int("depth_width", self.depth_width, MAX_SIDE)
            _check_int("depth_height", self.depth_height, MAX_SIDE)

    @property
    def depth_size(self) -> tuple[int, int]:
        """(width, height) of the depth stream before alignment (px)."""
        if self.depth_width is None:
            return self.width, self.height
        return self.depth_width, self.depth_height

    def describe(self) -> str:
        """The requested modes, e.g. ``colour 640x480@30 + depth 848x480@30``."""
        text = f"colour {self.width}x{self.height}@{self.fps}"
        if self.depth:
            w, h = self.depth_size
            text += f" + depth {w}x{h}@{self.fps}"
        return text


def _check_int(name: str, value, top: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise ValueError(f"{name} must be an integer in [1, {top}], got {value!r}")


def realsense_features(name: str, config: RealSenseConfig) -> dict[str, Feature]:
    """The observation features a RealSense camera adds to a robot spec (no device needed).

    Returns:
        ``observation.images.<name>``: uint8 [height, width, 3], unit "pixel" (RGB); with
        ``config.depth`` also ``observation.depth.<name>``: uint16 [height, width], unit "mm"
        (aligned to colour, so the colour's size).
    """
    from tether.robot.spec import Feature  # here: tether.robot imports the cameras package

    features = {f"observation.images.{name}": Feature("uint8", (config.height, config.width, 3), unit="pixel")}
    if config.depth:
        features[f"observation.depth.{name}"] = Feature("uint16", (config.height, config.width), unit="mm")
    return features


def _serial(device) -> str:
    rs = _rs()
    return device.get_info(rs.camera_info.serial_number) if device.supports(rs.camera_info.serial_number) else "?"


def select_device(devices, serial: str | None, what: str):
    """The device of ``devices`` (an ``rs.device_list`` or a list of ``rs.device``) to open.

    Raises:
        CameraError: none matches ``serial``, none is connected, or several are and no serial
            was given; the message names ``what``, the serial looked for and every serial found.
    """
    found = [(_serial(d), d) for d in devices]
    listing = f"{len(found)} RealSense device{'s' if len(found) != 1 else ''} found"
    if found:
        listing += f" (serials {', '.join(s for s, _ in found)})"
    if serial is not None:
        for s, device in found:
            if s == serial:
                return device
        raise CameraError(f"{what}: no RealSense device with serial {serial}; {listing}: is it "
                          "plugged into USB 3, and are librealsense's udev rules installed?")
    if not found:
        raise CameraError(f"{what}: no RealSense device connected (any serial); {listing}: is it "
                          "plugged into USB 3, and are librealsense's udev rules installed?")
    if len(found) > 1:
        raise CameraError(f"{what}: {listing}; give the serial of the one to open")
    return found[0][1]


def offered_modes(device) -> dict[str, set[tuple[int, int, int]]]:
    """The device's colour (rgb8) and depth (z16) modes: {"colour"|"depth": {(width, height, fps)}}."""
    rs = _rs()
    modes: dict[str, set[tuple[int, int, int]]] = {"colour": set(), "depth": set()}
    wanted = {(rs.stream.color, rs.format.rgb8): "colour", (rs.stream.depth, rs.format.z16): "depth"}
    for sensor in device.query_sensors():
        for profile in sensor.get_stream_profiles():
            kind = wanted.get((profile.stream_type(), profile.format()))
            if kind is not None and profile.is_video_stream_profile():
                video = profile.as_video_stream_profile()
                modes[kind].add((video.width(), video.height(), profile.fps()))
    return modes


def check_modes(device, config: RealSenseConfig, what: str) -> None:
    """Refuse a configuration the device cannot stream.

    Raises:
        CameraError: the colour (or depth) mode is not offered; the message lists the offered
            modes as WIDTHxHEIGHT@FPS.
    """
    modes = offered_modes(device)
    asked = [("colour", (config.width, config.height, config.fps))]
    if config.depth:
        asked.append(("depth", (*config.depth_size, config.fps)))
    for kind, mode in asked:
        if mode not in modes[kind]:
            offered = ", ".join(f"{w}x{h}@{f}" for w, h, f in sorted(modes[kind])) or "none"
            raise CameraError(f"{what}: {kind} {mode[0]}x{mode[1]}@{mode[2]} is not a mode of this "
                              f"device; it offers {kind} {offered}")


def capture_time(arrival_s: float, arrival_wall_s: float, stamp_ms: float, host_clock: bool) -> float:
    """A frame's capture time on ``time.monotonic()`` (s).

    Args:
        arrival_s: ``time.monotonic()`` when the frame reached this process (s).
        arrival_wall_s: ``time.time()`` at the same moment (s).
        stamp_ms: the frame's librealsense timestamp (ms).
        host_clock: the stamp is on the host's wall clock (``global_time`` or ``system_time``).

    An age (wall clock at arrival minus the stamp) outside [0, ``MAX_FRAME_AGE_S``] means the
    clocks disagree (a step of the wall clock); the arrival time is returned then, and for a
    stamp on the device's own clock.
    """
    if not host_clock:
        return arrival_s
    age = arrival_wall_s - stamp_ms / 1000.0
    return arrival_s - age if 0.0 <= age <= MAX_FRAME_AGE_S else arrival_s


class RealSenseCamera(ThreadedCamera):
    """Capture a RealSense camera's colour (and depth) in a background thread.

    Args:
        config: device, modes and depth (``RealSenseConfig``; validated when it was made).
        name: the camera's name in errors and datasets (``observation.images.<name>``,
            ``observation.depth.<name>``).

    ``read()`` returns the newest frame (older ones are dropped, and counted in ``dropped``),
    as ``OpenCVCamera`` does; ``features()`` says what it adds to a robot spec.
    """

    def __init__(self, config: RealSenseConfig | None = None, name: str = "camera"):
        self.config = config if config is not None else RealSenseConfig()
        self.name = name
        self._pipeline = None
        self._align = None
        super().__init__()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _describe(self) -> str:
        serial = self.config.serial or "any serial"
        return f"RealSense camera {self.name!r} ({serial}, {self.config.describe()})"

    def features(self) -> dict[str, Feature]:
        """The features this camera adds to a robot spec (``realsense_features``)."""
        return realsense_features(self.name, self.config)

    def start(self) -> None:
        """Find the device, check its modes and start streaming.

        Raises:
            CameraError: pyrealsense2 missing, no matching device (names the serial looked for
                and how many devices were found), a mode the device does not offer (lists the
                offered ones), or librealsense refusing to start the stream.
        """
        rs = _rs()
        what = self._describe()
        device = select_device(rs.context().query_devices(), self.config.serial, what)
        check_modes(device, self.config, what)
        cfg = rs.config()
        cfg.enable_device(_serial(device))
        cfg.enable_stream(rs.stream.color, self.config.width, self.config.height, rs.format.rgb8, self.config.fps)
        if self.config.depth:
            w, h = self.config.depth_size
            cfg.enable_stream(rs.stream.depth, w, h, rs.format.z16, self.config.fps)
        pipeline = rs.pipeline()
        try:
            pipeline.start(cfg)
        except RuntimeError as e:  # e.g. the device is busy in another process
            raise CameraError(f"{what}: librealsense could not start it: {e}") from None
        self._pipeline = pipeline
        self._align = rs.align(rs.stream.color) if self.config.depth else None
        self._buffer.restart()
        self._stop.clear()
        self._thread = threading.Thread(target=self._capture, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def to_frame(self, frameset, arrival_s: float, arrival_wall_s: float, index: int) -> Frame:
        """A tether ``Frame`` from a librealsense frameset (what ``pipeline.wait_for_frames()``
        returns): RGB colour copied out of librealsense's buffer, depth aligned to it and in mm.

        Raises:
            CameraError: the frameset lacks the colour (or depth) frame, or has the wrong size.
        """
        rs = _rs()
        if self.config.depth:
            if self._align is None:
                self._align = rs.align(rs.stream.color)
            frameset = self._align.process(frameset)
        colour = frameset.get_color_frame()
        if not colour:
            raise CameraError(f"{self._describe()} delivered a frameset without colour")
        # librealsense reuses its buffers once the frame is released: copy
        image = np.array(colour.get_data(), dtype=np.uint8, copy=True)
        want = (self.config.height, self.config.width, 3)
        if image.shape != want:
            raise CameraError(f"{self._describe()} delivered colour {image.shape}, expected {want}")
        depth = None
        if self.config.depth:
            depth_frame = frameset.get_depth_frame()
            if not depth_frame:
                raise CameraError(f"{self._describe()} delivered a frameset without depth")
            depth = _depth_mm(np.asarray(depth_frame.get_data()), depth_frame.get_units())
        domain = colour.get_frame_timestamp_domain()
        host = domain in (rs.timestamp_domain.global_time, rs.timestamp_domain.system_time)
        stamp = capture_time(arrival_s, arrival_wall_s, colour.get_timestamp(), host)
        return Frame(image, stamp, index, depth)

    def _capture(self) -> None:
        while not self._stop.is_set():
            try:
                ok, frameset = self._pipeline.try_wait_for_frames(200)
            except RuntimeError as e:  # the device went away
                self._buffer.end(f"stopped delivering frames: {e}")
                return
            if not ok:
                continue  # read() names a silence longer than its timeout
            arrival, wall = time.monotonic(), time.time()
            try:
                frame = self.to_frame(frameset, arrival, wall, self._buffer.frames)
            except CameraError as e:
                self._buffer.end(str(e).removeprefix(self._describe()).strip())
                return
            self._buffer.put(frame)

    def stop(self) -> None:
        """Stop streaming and release the device (safe to call when not started)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            except RuntimeError as e:  # already stopped by an unplug
                log.debug("%s: pipeline.stop(): %s", self._describe(), e)
            self._pipeline = None


def _depth_mm(raw: np.ndarray, units_m: float) -> np.ndarray:
    """Depth in uint16 mm from librealsense's z16 values and its depth unit (m per value)."""
    if abs(units_m - 0.001) < 1e-9:
        return np.array(raw, dtype=np.uint16, copy=True)
    mm = np.rint(raw.astype(np.float64) * (units_m * 1000.0))
    return np.clip(mm, 0, np.iinfo(np.uint16).max).astype(np.uint16)
