"""Data sets and per-image transforms: Fashion-MNIST (embedded default), ImageNet-style folders, synthetic."""

from stemsweep.data.build import DataBundle, build_data

__all__ = ["DataBundle", "build_data"]
