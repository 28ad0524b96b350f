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


class VideoEncoder:
    """Encode RGB frames to an MP4 file one at a time, so a recording never holds its video in memory.

    Frames go to ``<path>.tmp``; ``close()`` finishes the stream and renames it to ``path``, so
    the file is complete or absent. Frame i gets the presentation time i / fps (s). H and W are
    padded to even sizes as yuv420p requires. Options: CRF 23, x264 preset ``veryfast`` and a
    keyframe every 2 frames, as LeRobot encodes, so random access decodes at most one extra frame.

    Args:
        path: the final file.
        fps: frames per second.
        crf: x264 constant rate factor (lower is better quality, larger files).

    Raises:
        ValueError (from ``add``): a frame of the wrong dtype or shape, or a size change.
    """

    def __init__(self, path: Path | str, fps: float, crf: int = 23):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.fps, self.crf = fps, crf
        self.frames = 0
        self._container = av.open(str(self.tmp), mode="w", format="mp4")
        self._stream = None
        self._shape: tuple[int, ...] | None = None

    def add(self, image: np.ndarray) -> None:
        """Encode one frame: uint8 [H, W, 3] RGB, the same size as the first."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 frame [H,W,3], got {image.dtype} {image.shape}")
        if self._stream is None:
            h, w = image.shape[:2]
            stream = self._container.add_stream(CODEC, rate=Fraction(self.fps).limit_denominator(1001))
            stream.width, stream.height = w + w % 2, h + h % 2
            stream.pix_fmt = PIX_FMT
            stream.options = {"crf": str(self.crf), "preset": "veryfast", "g": "2"}
            self._stream, self._shape = stream, image.shape
        elif image.shape != self._shape:
            raise ValueError(f"frame {self.frames} is {image.shape}, the video is {self._shape}")
        h, w = image.shape[:2]
        if h % 2 or w % 2:
            image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        """Flush the encoder and move the file into place.

        Raises:
            ValueError: no frame was added.
        """
        if self._stream is None:
            self.abort()
            raise ValueError(f"{self.path}: a video needs at least one frame")
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self.tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        """Stop encoding and delete the partial file."""
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - a half-initialised stream may fail to finish
            pass
        self.tmp.unlink(missing_ok=True)


def write_mp4(path: Path | str, frames: np.ndarray, fps: float, crf: int = 23) -> Path:
    """Write ``frames`` (uint8, [N, H, W, 3], RGB) to ``path`` at ``fps`` frames per second
    (a ``VideoEncoder`` fed every frame: complete or absent).

    Raises:
        ValueError: frames of the wrong shape or dtype, or no frames.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"expected uint8 frames [N,H,W,3], got {frames.dtype} {frames.shape}")
    encoder = VideoEncoder(path, fps, crf)
    try:
        for image in frames:
            encoder.add(image)
    except BaseException:
        encoder.abort()
        raise
    return encoder.close()


def read_mp4(path: Path | str) -> np.ndarray:
    """All frames of a video as uint8 [N, H, W, 3] RGB."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def count_frames(path: Path | str) -> int:
    """Number of frames in a video, by decoding it (container headers can be wrong)."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))
