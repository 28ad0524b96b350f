"""``--cameras NAME=SOURCE`` arguments of ``tether teleop`` and ``tether serve``: USB / V4L2
devices, video files and streams through OpenCV, Intel RealSense cameras by serial."""

from __future__ import annotations

from tether.launch import UsageError

REALSENSE_FPS = 30  # offered at every colour resolution of the D400 family; the recorder repeats
# or skips frames to meet a control rate that differs (tether.robot.camera_sync)


def open_cameras(specs: tuple[str, ...], size: str | None, fps: float) -> list:
    """Cameras from NAME=SOURCE strings: ``realsense`` or ``realsense:SERIAL`` is a
    ``RealSenseCamera`` (colour at ``REALSENSE_FPS``, 640x480 unless ``size``), anything else an
    ``OpenCVCamera`` at ``fps`` (a source of digits is a device index; a video file plays at
    ``fps`` in a loop, standing in for a live camera). Nothing is opened here.

    Raises:
        UsageError: a malformed NAME=SOURCE, size or RealSense serial.
    """
    from tether.perception.cameras import OpenCVCamera, RealSenseCamera, RealSenseConfig

    width = height = None
    if size is not None:
        try:
            width, height = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise UsageError(f"--camera-size must be WIDTHxHEIGHT, not {size!r}") from None
    cameras = []
    for item in specs:
        name, sep, source = item.partition("=")
        if not sep or not name or not source:
            raise UsageError(f"--cameras takes NAME=SOURCE (e.g. front=0), not {item!r}")
        kind, colon, serial = source.partition(":")
        if kind == "realsense":
            if colon and not serial:
                raise UsageError(f"--cameras {item}: give realsense:SERIAL or plain realsense")
            try:
                config = RealSenseConfig(serial or None, width or 640, height or 480, REALSENSE_FPS)
            except ValueError as e:
                raise UsageError(f"--cameras {item}: {e}") from None
            cameras.append(RealSenseCamera(config, name))
            continue
        cameras.append(OpenCVCamera(int(source) if source.isdigit() else source, name,
                                    width, height, fps, loop=True))
    return cameras
