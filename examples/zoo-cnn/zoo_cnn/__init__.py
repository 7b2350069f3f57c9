"""zoo-cnn: an example plugin for zoo-launch that adds the ``cnn`` model."""

from zoo_cnn.model import SmallCNN

__all__ = ["SmallCNN"]
