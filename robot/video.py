"""MP4 video files through PyAV (FFmpeg): encode RGB frames, decode them back.

H.264 (libx264, yuv420p) is the default: every player and LeRobot's decoders read it, and the
FFmpeg inside PyAV's wheels can both encode and decode it (its AV1 decoder needs libdav1d or
hardware, which those wheels lack).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CODEC = "libx264"
PIX_FMT = "yuv420p"


def write_mp4(path: Path | str, frames: np.ndarray, fps: float, crf: int = 23) -> Path:
    """Write ``frames`` (uint8, [N, H, W, 3], RGB) to ``path`` at ``fps`` frames per second.

    Frame i gets the presentation time i / fps (s). H and W are padded to even sizes as yuv420p
    requires. The file is written to a temporary name and renamed, so it is complete or absent.

    Raises:
        ValueError: frames of the wrong shape or dtype, or no frames.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"expected uint8 frames [N,H,W,3], got {frames.dtype} {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    tmp = path.with_name(path.name + ".tmp")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream(CODEC, rate=rate)
        stream.width, stream.height = w + pad_w, h + pad_h
        stream.pix_fmt = PIX_FMT
        stream.options = {"crf": str(crf), "preset": "veryfast", "g": "2"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return path


def read_mp4(path: Path | str) -> np.ndarray:
    """All frames of a video as uint8 [N, H, W, 3] RGB."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
