"""Datasets in the LeRobotDataset v3.0 layout: a crash-safe writer, a reader, merge and split."""

from tether.robot.dataset.reader import Dataset, DatasetError
from tether.robot.dataset.writer import DatasetExistsError, DatasetWriter
from tether.robot.dataset.edit import DatasetEditError, merge, recompute_stats, split

__all__ = [
    "Dataset", "DatasetEditError", "DatasetError", "DatasetExistsError", "DatasetWriter", "merge",
    "recompute_stats", "split",
]
