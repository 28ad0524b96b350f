"""Datasets in the LeRobotDataset v3.0 layout: a crash-safe writer and a reader."""

from tether.robot.dataset.reader import Dataset, DatasetError
from tether.robot.dataset.writer import DatasetExistsError, DatasetWriter

__all__ = ["Dataset", "DatasetError", "DatasetExistsError", "DatasetWriter"]
