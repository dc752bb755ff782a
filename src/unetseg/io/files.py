"""Writing files safely: atomic paths, JSON, tiled TIFF."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from unetseg.io.pixelsize import tiff_resolution_kwargs

_IMAGEJ_DTYPES = {np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.float32)}

__all__ = ["atomic_path", "write_json", "write_tiled_tiff", "write_tiff_array", "TIFF_TILE"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; move it into place only if the block succeeds.

    Works for files and directories (Zarr stores). An interrupted or failed write leaves no
    file at ``path``, so a rerun never mistakes a partial output for a finished one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed writer
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_tiled_tiff(
    path: str | os.PathLike,
    block: Callable[[int, slice, slice], np.ndarray],
    shape: tuple[int, ...],
    dtype: Any,
    spatial_axes: str,
    *,
    pixel_size: Any = None,
) -> None:
    """Write a ``(Y, X)`` or ``(Z, Y, X)`` image as a tiled, zlib-compressed TIFF, tile by tile.

    ``block(z, rows, columns)`` returns the pixels of one tile (smaller at the image edge),
    so the image never needs to be in memory. BigTIFF when the pixels exceed 2 GiB. Write
    to a temporary path (:func:`atomic_path`) for an all-or-nothing file. With
    ``pixel_size`` (µm per pixel, ``(Y, X)`` or ``(Z, Y, X)``) the file records it as ImageJ
    does, so Fiji and napari show micrometres (:func:`unetseg.io.pixelsize.tiff_resolution_kwargs`).
    """
    height, width = shape[-2:]
    z_count = shape[0] if len(shape) == 3 else 1

    def tiles() -> Iterator[np.ndarray]:
        for z in range(z_count):
            for y in range(0, height, TIFF_TILE):
                for x in range(0, width, TIFF_TILE):
                    pixels = block(z, slice(y, y + TIFF_TILE), slice(x, x + TIFF_TILE))
                    padded = np.zeros((TIFF_TILE, TIFF_TILE), dtype=dtype)
                    padded[: pixels.shape[0], : pixels.shape[1]] = pixels
                    yield padded

    tifffile.imwrite(
        path, tiles(), shape=shape, dtype=dtype, tile=(TIFF_TILE, TIFF_TILE),
        bigtiff=int(np.prod(shape)) * np.dtype(dtype).itemsize > 2**31 - 2**25,
        compression="zlib", photometric="minisblack", **_size_kwargs(pixel_size, dtype, spatial_axes),
    )  # fmt: skip


def write_tiff_array(path: str | os.PathLike, array: np.ndarray, spatial_axes: str, *, pixel_size: Any = None) -> None:
    """Write an in-memory ``(Y, X)`` or ``(Z, Y, X)`` array as :func:`write_tiled_tiff`
    does (the same tiled file), atomically."""
    planes = array if array.ndim == 3 else array[np.newaxis]
    with atomic_path(path) as tmp:
        write_tiled_tiff(tmp, lambda z, rows, columns: planes[z, rows, columns], array.shape, array.dtype,
                         spatial_axes, pixel_size=pixel_size)  # fmt: skip


def _size_kwargs(pixel_size: Any, dtype: Any, spatial_axes: str) -> dict[str, Any]:
    """TIFF keyword arguments recording the axes and, if known, the pixel size."""
    if pixel_size is None:
        return {"metadata": {"axes": spatial_axes}}
    if np.dtype(dtype) in _IMAGEJ_DTYPES:
        kwargs = tiff_resolution_kwargs(tuple(pixel_size)[-len(spatial_axes) :])
        return {**kwargs, "imagej": True, "metadata": {**kwargs["metadata"], "axes": spatial_axes}}
    # Labels wider than ImageJ's types: baseline resolution tags (Y, X) only.
    return {"metadata": {"axes": spatial_axes}, **tiff_resolution_kwargs(tuple(pixel_size)[-2:], imagej=False)}


TIFF_TILE = 256  # TIFF tiles must be multiples of 16
