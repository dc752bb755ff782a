"""The model card (``card.json``) of a model directory, read without loading torch.

A model is a self-describing directory: ``weights.pt`` plus ``card.json``, which holds
everything needed to rebuild and use the network: its architecture, the normalisation its
inputs need, the probability threshold, the training configuration and data, and the
versions that produced it (:mod:`unetseg.nn.modelcard` writes and loads the weights).
"""

from __future__ import annotations

import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from unetseg.errors import InputError

__all__ = ["FORMAT_VERSION", "WEIGHTS", "CARD", "read_card", "environment_versions"]

FORMAT_VERSION = 1
WEIGHTS, CARD = "weights.pt", "card.json"


def environment_versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape a result."""
    versions = {"python": platform.python_version()}
    for package in ("unetseg", "torch", "numpy", "zarr", "dask", "tifffile", "scikit-image", "snakemake"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions


def read_card(directory: str | os.PathLike) -> dict[str, Any]:
    """The model card of a model directory, checked for a format this version reads."""
    path = Path(directory) / CARD
    if not path.is_file():
        raise InputError(f"{directory}: not a unetseg model directory (no {CARD}); pass results/<dataset>/model.")
    card = json.loads(path.read_text())
    if card.get("format_version") != FORMAT_VERSION or card.get("architecture", {}).get("name") != "UNet":
        raise InputError(
            f"{path}: model format {card.get('format_version')!r} / architecture "
            f"{card.get('architecture', {}).get('name')!r} is not one this unetseg "
            f"({FORMAT_VERSION}, UNet) can load; use the unetseg version that trained it."
        )
    return card
