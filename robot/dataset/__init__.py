"""Datasets in the LeRobotDataset v3.0 layout: a crash-safe writer, a reader, merge and split,
and a cache of decoded video frames for training."""

from tether.robot.dataset.reader import Dataset, DatasetError
from tether.robot.dataset.writer import DatasetExistsError, DatasetWriter
from tether.robot.dataset.edit import DatasetEditError, merge, recompute_stats, split
from tether.robot.dataset.cache import VideoCache

__all__ = [
    "Dataset", "DatasetEditError", "DatasetError", "DatasetExistsError", "DatasetWriter", "merge",
    "recompute_stats", "split", "VideoCache",
]
