"""Action-free episodes of camera frames (videos or a dataset's camera) and ICVF batches on them.

Value pre-training from passive data (ICVF, Ghosh et al. 2023; V-PTR, Bhateja, Ghosh et al. 2023)
needs only frames in time order: actions and rewards, where there are any, are ignored.
:class:`FrameEpisodes` holds them, one uint8 [T, H, W, 3] array per episode, from

* MP4 files, one episode each: decoded by PyAV one frame at a time and resized as they come
  (OpenCV), so a long full-resolution video is never in memory; its frames at the training size
  are (H * W * 3 bytes a frame: 12 KB at 64 x 64);
* a dataset's camera through :class:`~tether.robot.dataset.cache.VideoCache`: memory maps of the
  decoded episodes at the camera's size, or resized copies in memory.

:func:`icvf_batches` draws transitions (s, s') within episodes and goals and intents with
:class:`~tether.policies.sampling.GoalSampler` (ICVF's mix: 30% random, 50% future, 20% current).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tether.robot.dataset import Dataset, DatasetError
from tether.robot.dataset.cache import VideoCache

DEFAULT_VIDEO_SIZE = 64
"""Side of the square frames videos are resized to when no size is given."""


class VideoReadError(DatasetError):
    """A video file that cannot be decoded, or episodes too few or too short to learn from (a
    DatasetError, so the command line prints it as one line)."""


def resize_frame(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] -> [size, size, 3] by OpenCV: area averaging to shrink (no aliasing),
    bilinear to enlarge; a frame already that size is returned as is."""
    import cv2

    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    shrink = size < h or size < w
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def decode_video(path: Path | str, size: int | None) -> np.ndarray:
    """All frames of a video, resized to ``size`` x ``size`` (None: as they are).

    Returns:
        uint8 [T, size, size, 3] RGB.

    Raises:
        VideoReadError: no such file, no video stream, or data FFmpeg cannot decode.
    """
    import av

    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                image = frame.to_ndarray(format="rgb24")
                frames.append(resize_frame(image, size) if size else image)
    except (av.FFmpegError, OSError) as e:
        raise VideoReadError(f"{path}: cannot decode video ({e})") from e
    if not frames:
        return np.zeros((0, size or 0, size or 0, 3), np.uint8)
    return np.stack(frames)


@dataclass
class FrameEpisodes:
    """Episodes of camera frames of one size, in time order.

    Attributes:
        episodes: uint8 [T_i, H, W, 3] per episode (arrays or read-only memory maps).
        names: a label per episode (file path, or ``<dataset>#<episode index>``).
        preprocessing: how frames were made from the source (resize, interpolation).
        skipped: names of sources left out (fewer than 2 frames: no transition).
        starts, ends: int64 [N] first row and one past the last row of each row's episode, rows
            numbered through the episodes in order.
    """

    episodes: list[np.ndarray]
    names: list[str]
    preprocessing: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self):
        if len(self.episodes) != len(self.names):
            raise ValueError(f"{len(self.episodes)} episodes but {len(self.names)} names")
        lengths = np.array([len(e) for e in self.episodes], np.int64)
        first = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.row_episode = np.repeat(np.arange(len(lengths)), lengths)
        self.starts = np.repeat(first, lengths)
        self.ends = self.starts + np.repeat(lengths, lengths)

    def __len__(self) -> int:
        """Frames in all episodes."""
        return len(self.row_episode)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of every frame."""
        return tuple(int(x) for x in self.episodes[0].shape[1:])

    @classmethod
    def from_videos(cls, paths: Sequence[Path | str], size: int | None = None) -> FrameEpisodes:
        """One episode per video file, every frame resized to ``size`` x ``size`` (default 64), so
        videos of different sizes go together.

        Raises:
            VideoReadError: an unreadable file, or no video with 2 frames or more.
        """
        size = size or DEFAULT_VIDEO_SIZE
        episodes, names, skipped = [], [], []
        for path in paths:
            frames = decode_video(path, size)
            if len(frames) < 2:
                skipped.append(str(path))
                continue
            episodes.append(frames)
            names.append(str(path))
        if not episodes:
            raise VideoReadError(f"none of the {len(paths)} videos has 2 frames or more (a transition)")
        return cls(episodes, names, {"source": "videos", "resize": f"{size}x{size}",
                                     "interpolation": "cv2.INTER_AREA (shrink) / INTER_LINEAR (enlarge)"}, skipped)

    @classmethod
    def from_dataset(cls, dataset: Dataset | Path | str, camera: str | None = None, size: int | None = None,
                     cache: VideoCache | Path | str | None = None) -> FrameEpisodes:
        """One episode per dataset episode: the frames of ``camera`` (default the first camera),
        at the camera's size, or resized to ``size`` x ``size``.

        Raises:
            DatasetError: unreadable dataset, no camera, or no camera named ``camera``.
            VideoReadError: no episode with 2 frames or more.
        """
        from tether.policies.reward_model import check_camera

        ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
        camera = check_camera(ds, camera)
        cache = cache if isinstance(cache, VideoCache) else VideoCache(ds, cache_dir=cache)
        episodes, names, skipped = [], [], []
        for i, ep in enumerate(ds.episodes):
            name = f"{ds.root}#{int(ep['episode_index'])}"
            if int(ep["length"]) < 2:
                skipped.append(name)
                continue
            frames = cache.array(camera, i)
            if size and frames.shape[1:3] != (size, size):
                frames = np.stack([resize_frame(f, size) for f in frames])
            episodes.append(frames)
            names.append(name)
        if not episodes:
            raise VideoReadError(f"{ds.root}: no episode has 2 frames or more (a transition)")
        resize = f"{size}x{size}" if size else "none"
        return cls(episodes, names, {"source": "dataset", "dataset": str(ds.root), "camera": camera,
                                     "resize": resize, "interpolation": "cv2.INTER_AREA (shrink) / INTER_LINEAR (enlarge)"},
                   skipped)

    def subset(self, indices: Sequence[int]) -> FrameEpisodes:
        """The episodes at ``indices`` (positions in ``episodes``)."""
        return FrameEpisodes([self.episodes[i] for i in indices], [self.names[i] for i in indices],
                             dict(self.preprocessing))

    def split(self, val_fraction: float, seed: int = 0) -> tuple[FrameEpisodes, FrameEpisodes]:
        """(train, held out): a random ``val_fraction`` of the episodes (at least one) held out.

        Raises:
            VideoReadError: fewer than 2 episodes (one must train, one be held out).
            ValueError: ``val_fraction`` outside (0, 1).
        """
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        n = len(self.episodes)
        if n < 2:
            raise VideoReadError(f"need at least 2 episodes (one is held out for the value report), got {n}")
        order = np.random.default_rng(seed).permutation(n)
        n_val = min(n - 1, max(1, round(val_fraction * n)))
        return self.subset(sorted(order[n_val:].tolist())), self.subset(sorted(order[:n_val].tolist()))

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """Frames at ``rows`` (int [K], any order): uint8 [K, H, W, 3], a copy."""
        rows = np.asarray(rows, np.int64)
        eps = self.row_episode[rows]
        local = rows - self.starts[rows]
        out = np.empty((len(rows), *self.image_shape), np.uint8)
        for e in np.unique(eps):
            m = eps == e
            out[m] = self.episodes[e][local[m]]
        return out


def icvf_batches(frames: FrameEpisodes, batch_size: int, goals, seed: int = 0) -> Callable[[int], dict]:
    """A ``sample_batch(step)`` for ``tether.policies.train.train`` and ``Icvf.loss``.

    Args:
        frames: the training episodes.
        batch_size: B.
        goals: a :class:`~tether.policies.sampling.GoalSampler` drawing both goals and intents.
        seed: the seed of ``batch_rng`` (each ``torchrun`` rank draws its own batches).

    Returns:
        step -> ``obs``, ``next_obs``, ``goal``, ``intent`` uint8 [B, H, W, 3] torch tensors
        (s_t, s_{t+1} of uniformly drawn transitions), ``at_goal``, ``at_intent`` bool [B] (the goal /
        intent is the frame s_t itself).
    """
    import torch

    from tether.policies.train import batch_rng

    rows_all = np.arange(len(frames))
    transitions = rows_all[rows_all + 1 < frames.ends]  # every frame but each episode's last

    def sample_batch(step: int) -> dict:
        rng = batch_rng(seed, step)
        rows = transitions[rng.integers(0, len(transitions), batch_size)]
        start, end = frames.starts[rows], frames.ends[rows]
        goal = goals.sample(rows, start, end, len(frames), rng)
        intent = goals.sample(rows, start, end, len(frames), rng)
        images = torch.from_numpy(frames.gather(np.concatenate([rows, rows + 1, goal, intent])))
        obs, next_obs, goal_img, intent_img = images.split(batch_size)
        return {"obs": obs, "next_obs": next_obs, "goal": goal_img, "intent": intent_img,
                "at_goal": torch.from_numpy(goal == rows), "at_intent": torch.from_numpy(intent == rows)}

    return sample_batch
