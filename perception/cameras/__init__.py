"""Cameras with one interface: ``start()``, ``read() -> Frame`` (the newest frame, with its
capture time), ``stop()``. ``OpenCVCamera`` captures in its own thread; ``RealSenseCamera``
captures an Intel RealSense's colour and optional aligned depth (pyrealsense2, imported at
``start()``); ``SimulatedCamera`` renders a simulator on demand; ``SyntheticCamera`` generates
frames on a clock."""

from tether.perception.cameras.base import Camera, CameraError, Frame
from tether.perception.cameras.opencv import OpenCVCamera
from tether.perception.cameras.realsense import RealSenseCamera, RealSenseConfig
from tether.perception.cameras.simulated import SimulatedCamera
from tether.perception.cameras.synthetic import SyntheticCamera

__all__ = ["Camera", "CameraError", "Frame", "OpenCVCamera", "RealSenseCamera", "RealSenseConfig", "SimulatedCamera", "SyntheticCamera"]
