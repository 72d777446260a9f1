"""Data layer: a source (mirror, torchvision, synthetic) cut by an imbalance profile into an ImbalancedSplit."""

from imbalance_lab.data.sources import DatasetUnavailable
from imbalance_lab.data.split import ImbalancedSplit, build_split

__all__ = ["DatasetUnavailable", "ImbalancedSplit", "build_split"]
