"""From the full-size probability map to the final mask, block by block.

Tiled inference writes each tile's write region into one ``(Z, K, Y, X)`` probability
array; this module turns it into the integer mask users get, as a tiled (Big)TIFF or a
Zarr array, without holding the image in memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from unetseg.io.files import TIFF_TILE, atomic_path, write_tiled_tiff
from unetseg.io.images import is_tiff_path, is_zarr_path

__all__ = ["FOREGROUND", "probabilities_to_labels", "write_mask"]

FOREGROUND = 255  # value of foreground pixels in binary masks: visible in any viewer


def probabilities_to_labels(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Labels of a ``(K, ...)`` probability block: binary (K = 1) or argmax over classes.

    Binary masks are 0 / :data:`FOREGROUND`; multi-class masks hold the class index.
    """
    if probs.shape[0] == 1:
        return np.where(probs[0] >= threshold, FOREGROUND, 0).astype(np.uint8)
    return probs.argmax(axis=0).astype(np.uint8)


def write_mask(
    probabilities: Any,
    output: str | os.PathLike,
    *,
    threshold: float = 0.5,
    spatial_axes: str = "YX",
    pixel_size: Any = None,
) -> tuple[int, ...]:
    """Threshold a probability map and write the mask, atomically.

    Parameters
    ----------
    probabilities : (Z, K, Y, X) array-like
        Probabilities (a Zarr array is read block by block).
    output : path-like
        ``.tif``/``.tiff`` (tiled, BigTIFF when over 2 GiB) or ``.zarr``.
    threshold : float
        Foreground threshold for binary models.
    spatial_axes : {"YX", "ZYX"}
        ``"YX"`` writes a 2D mask (``Z`` must be 1); ``"ZYX"`` a stack.
    pixel_size : sequence of float, optional
        µm per pixel, recorded in a TIFF output (Fiji and napari show micrometres).

    Returns
    -------
    tuple of int
        Shape of the written mask.
    """
    z_count, _, height, width = probabilities.shape
    shape = (height, width) if spatial_axes == "YX" else (z_count, height, width)
    if spatial_axes == "YX" and z_count != 1:
        raise ValueError(f"a 2D mask needs one plane, got {z_count}")
    output = Path(output)
    with atomic_path(output) as tmp:
        if is_tiff_path(output):

            def block(z: int, rows: slice, columns: slice) -> np.ndarray:
                return probabilities_to_labels(np.asarray(probabilities[z, :, rows, columns]), threshold)

            write_tiled_tiff(tmp, block, shape, np.uint8, spatial_axes, pixel_size=pixel_size)
        elif is_zarr_path(output):
            rows_per_block = probabilities.chunks[2] if hasattr(probabilities, "chunks") else TIFF_TILE
            chunks = (min(rows_per_block, height), min(TIFF_TILE * 4, width))
            mask = zarr.create_array(
                str(tmp), shape=shape, dtype="uint8", chunks=chunks if spatial_axes == "YX" else (1, *chunks),
                attributes={"axes": spatial_axes, "content": "mask"},
            )  # fmt: skip
            for z in range(z_count):
                for y in range(0, height, rows_per_block):
                    rows = slice(y, y + rows_per_block)
                    labels = probabilities_to_labels(np.asarray(probabilities[z, :, rows]), threshold)
                    mask[(rows,) if spatial_axes == "YX" else (z, rows)] = labels
        else:
            raise ValueError(f"{output}: output must end in .tif, .tiff or .zarr")
    return shape
