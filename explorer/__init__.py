"""explorer: a design-space explorer for ResNeXt-style convolutional networks."""

__version__ = "0.1.0"
