"""unetseg: U-Net segmentation of microscopy images, as a reproducible Snakemake pipeline.

The package's layout follows the pipeline's stages: ``io`` (reading and writing images),
``data`` (sample sheet, preprocessing, patches, augmentation), ``nn`` (the U-Net, losses,
weight map, model card), ``training``, ``inference`` (tiled prediction), ``objects``
(instance labels and measurements), ``evaluation``, ``report``, ``workflow`` (config checks
for the Snakemake layer) and ``cli`` (one module per command).

``import unetseg`` loads neither torch nor dask: the names below are imported on first use.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("unetseg")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

# Public name -> module that defines it, imported lazily (PEP 562).
_LAZY = {"UNet": "unetseg.nn.model", "load_model": "unetseg.nn.modelcard", "read_card": "unetseg.nn.modelcard"}

__all__ = ["UNet", "load_model", "read_card", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'unetseg' has no attribute {name!r}")
