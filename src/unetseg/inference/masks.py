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

__all__ = ["FOREGROUND", "probabilities_to_labels", "object_seeds", "write_mask", "add_object_pixels"]

FOREGROUND = 255  # value of foreground pixels in binary masks: visible in any viewer


def probabilities_to_labels(probs: np.ndarray, threshold: float, *, contact: bool = False) -> np.ndarray:
    """Labels of a ``(K, ...)`` probability block: binary (K = 1) or argmax over classes.

    Binary masks are 0 / :data:`FOREGROUND`; multi-class masks hold the class index. A model
    trained on contact targets (``contact``: background, object, contact) gives a binary
    mask of everything whose most probable class is not the background.
    """
    if probs.shape[0] == 1:
        return np.where(probs[0] >= threshold, FOREGROUND, 0).astype(np.uint8)
    if contact:
        return np.where(probs.argmax(axis=0) > 0, FOREGROUND, 0).astype(np.uint8)
    return probs.argmax(axis=0).astype(np.uint8)


def object_seeds(probs: Any, spatial_axes: str = "ZYX") -> Any:
    """Where a contact model's most probable class is "object" (not contact, not background):
    the touching objects apart, which the instances grow back over their contacts.

    ``probs`` is a ``(Z, 3, Y, X)`` NumPy array (gives a bool array) or a Zarr array (gives a
    lazy dask array, read chunk by chunk); ``(Y, X)`` for ``"YX"``, else ``(Z, Y, X)``.
    """
    if isinstance(probs, np.ndarray):
        seeds = probs.argmax(axis=1) == 1
    else:
        import dask.array as da

        seeds = da.from_zarr(probs).argmax(axis=1) == 1
    return seeds[0] if spatial_axes == "YX" else seeds


def write_mask(
    probabilities: Any,
    output: str | os.PathLike,
    *,
    threshold: float = 0.5,
    spatial_axes: str = "YX",
    pixel_size: Any = None,
    contact: bool = False,
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
    contact : bool
        The probabilities are a contact model's (:func:`probabilities_to_labels`).

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
                return probabilities_to_labels(
                    np.asarray(probabilities[z, :, rows, columns]), threshold, contact=contact
                )

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
                    labels = probabilities_to_labels(np.asarray(probabilities[z, :, rows]), threshold, contact=contact)
                    mask[(rows,) if spatial_axes == "YX" else (z, rows)] = labels
        else:
            raise ValueError(f"{output}: output must end in .tif, .tiff or .zarr")
    return shape


def add_object_pixels(
    mask_path: str | os.PathLike, instances_path: str | os.PathLike, *, pixel_size: Any = None
) -> int:
    """Set the pixels of a binary mask that the instance labels cover to foreground.

    After :func:`unetseg.objects.components.fill_gaps` the instances hold the lines between
    touching objects that the mask leaves as background; this puts them in the mask too, so
    the mask's foreground is the objects'. A TIFF mask is rewritten atomically tile by tile,
    a Zarr mask updated plane by plane.

    Returns
    -------
    int
        The number of pixels set.
    """
    from unetseg.io.images import open_image

    mask_path = Path(mask_path)
    added = 0
    with open_image(mask_path) as mask, open_image(instances_path) as instances:
        spatial_axes = "ZYX" if "Z" in mask.axes else "YX"
        if is_zarr_path(mask_path):
            target = zarr.open_array(str(mask_path), mode="r+")
            for z in range(mask.shape[0]):
                plane, objects = mask.read(z)[0], instances.read(z)[0]
                fill = (objects > 0) & (plane == 0)
                added += int(fill.sum())
                if fill.any():
                    target[(slice(None),) if spatial_axes == "YX" else (z,)] = np.where(fill, FOREGROUND, plane)
            return added

        def block(z: int, rows: slice, columns: slice) -> np.ndarray:
            nonlocal added
            plane, objects = mask.read(z, rows, columns)[0], instances.read(z, rows, columns)[0]
            fill = (objects > 0) & (plane == 0)
            added += int(fill.sum())
            return np.where(fill, FOREGROUND, plane).astype(np.uint8)

        with atomic_path(mask_path) as tmp:
            write_tiled_tiff(tmp, block, mask.spatial_shape, np.uint8, spatial_axes, pixel_size=pixel_size)
    return added
