"""unetseg: U-Net segmentation of microscopy images, as a reproducible Snakemake pipeline."""

from importlib.metadata import PackageNotFoundError, version

from .modelcard import load_model, read_card
from .model import UNet

try:
    __version__ = version("unetseg")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

__all__ = ["UNet", "load_model", "read_card", "__version__"]
