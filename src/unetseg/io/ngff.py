"""Segmentation results as OME-Zarr (OME-NGFF), written with the ``ome-zarr`` library.

One store holds the probability map as the NGFF image and the mask and instance ids as
NGFF label images (``labels/mask``, ``labels/instances``), each as a multiscale pyramid
that viewers such as napari open directly. ``ome-zarr`` writes the arrays and all NGFF
metadata (NGFF 0.5, on Zarr v3); this module builds the pyramids, lazily from the input
arrays, so an image larger than memory streams chunk by chunk.

Layout
------
* The image has axes ``c, y, x`` (2D) or ``c, z, y, x`` (3D stacks), one channel per
  class. Label images have the same axes with one channel, as NGFF recommends (each label
  dimension is the image's or 1).
* Pyramid level ``i + 1`` halves ``Y`` and ``X`` of level ``i`` (rounded down, ``Z`` kept)
  until the smaller side is at most ``min_level_size``. Probabilities are averaged over
  2x2 blocks; labels take the top-left pixel of each block, so a lower level holds only
  ids present at full resolution. ome-zarr derives each level's ``scale`` from the
  level's shape (full size / level size, exactly ``2**i`` when the size divides) and a
  ``translation`` that centres the level's pixels on the blocks they summarise.
* Without probabilities, NGFF still needs an image for the labels to belong to: the
  image is then the mask (or, without a mask, the instance ids) itself, with one channel,
  and the labels are written as usual.
* ``attrs["unetseg"]`` of the root group says what the image holds: ``content``
  (``"probabilities"``, ``"mask"`` or ``"instances"``) and ``scale``, the factor from
  stored values to probabilities (``1/255`` for ``uint8``, else 1).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

with warnings.catch_warnings():
    # ome-zarr >= 0.14 builds a deprecated Scaler as a default argument of write_labels
    # when ome_zarr.writer is imported; we never use it, and the warning would otherwise
    # reach everyone importing this module.
    warnings.filterwarnings("ignore", "Call to deprecated class Scaler", DeprecationWarning)
    from ome_zarr.writer import write_multiscale, write_multiscale_labels

from unetseg.errors import InputError
from unetseg.io.files import atomic_path
from unetseg.io.images import is_zarr_path
from unetseg.io.pixelsize import ngff_axes, ngff_scale

__all__ = ["PROBABILITY_DTYPES", "write_ome_zarr", "pyramid_shapes"]

PROBABILITY_DTYPES = ("float16", "float32", "uint8")
_COLORS = ("FFFFFF", "FF00FF", "00FFFF", "FFFF00", "FF0000", "00FF00", "0000FF")


def _lazy(array: Any) -> da.Array:
    """A dask view of ``array`` (a Zarr array is read chunk by chunk, never whole)."""
    if isinstance(array, da.Array):
        return array
    if isinstance(array, zarr.Array):
        return da.from_zarr(array)
    return da.from_array(np.asarray(array))


def pyramid_shapes(shape: tuple[int, ...], min_level_size: int) -> list[tuple[int, ...]]:
    """Shapes of the pyramid levels of an array whose last two axes are ``Y, X``.

    Each level halves ``Y`` and ``X`` (rounded down) until the smaller side is at most
    ``min_level_size``; the first level is ``shape`` itself.
    """
    shapes = [tuple(shape)]
    while min(shapes[-1][-2:]) > min_level_size:
        *rest, height, width = shapes[-1]
        shapes.append((*rest, height // 2, width // 2))
    return shapes


def _probabilities(probabilities: Any, spatial_axes: str, path: Path) -> da.Array:
    """``(Z, K, Y, X)`` probabilities as a float32 ``(K, Y, X)`` or ``(K, Z, Y, X)`` image."""
    array = _lazy(probabilities)
    if array.ndim != 4:
        raise InputError(
            f"{path}: probabilities must be a (Z, K, Y, X) array (Z = 1 for 2D images), got shape {array.shape}."
        )
    if spatial_axes == "YX":
        if array.shape[0] != 1:
            raise InputError(
                f"{path}: probabilities have {array.shape[0]} planes but spatial_axes='YX'; "
                "use spatial_axes='ZYX' for stacks."
            )
        return array[0].astype(np.float32)
    return array.transpose(1, 0, 2, 3).astype(np.float32)


def _label_image(labels: Any, name: str, spatial_axes: str, path: Path) -> da.Array:
    """A ``(Y, X)`` or ``(Z, Y, X)`` label array as a one-channel NGFF label image."""
    array = _lazy(labels)
    if spatial_axes == "YX" and array.ndim == 3 and array.shape[0] == 1:
        array = array[0]  # a 2D mask stored as a one-plane stack
    if array.ndim != len(spatial_axes):
        raise InputError(
            f"{path}: {name} of shape {array.shape} does not fit spatial_axes={spatial_axes!r}; "
            "pass (Y, X) labels with 'YX' or (Z, Y, X) with 'ZYX'."
        )
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise InputError(
            f"{path}: {name} has dtype {array.dtype}; NGFF label images hold integers, so "
            "threshold or round the array first."
        )
    return array[np.newaxis]


def _encode(probabilities: da.Array, dtype: str) -> da.Array:
    if dtype == "uint8":
        return da.round(da.clip(probabilities, 0, 1) * 255).astype(np.uint8)
    return probabilities.astype(dtype)


def _chunked(array: da.Array, chunk: int) -> da.Array:
    """One chunk per channel and plane, ``chunk`` x ``chunk`` in Y and X."""
    return array.rechunk((1,) * (array.ndim - 2) + (chunk, chunk))


def _image_pyramid(image: da.Array, levels: int, dtype: str, chunk: int) -> list[da.Array]:
    """Probabilities averaged over 2x2 blocks per level (from float32), then encoded."""
    pyramid = [image]
    for _ in range(levels - 1):
        axes = {image.ndim - 2: 2, image.ndim - 1: 2}
        pyramid.append(da.coarsen(np.mean, pyramid[-1], axes, trim_excess=True))
    return [_chunked(_encode(level, dtype), chunk) for level in pyramid]


def _label_pyramid(labels: da.Array, levels: int, chunk: int) -> list[da.Array]:
    """Labels subsampled by striding: each level keeps the top-left pixel of 2x2 blocks."""
    pyramid = [labels]
    for _ in range(levels - 1):
        *_, height, width = pyramid[-1].shape
        pyramid.append(pyramid[-1][..., : height - height % 2 : 2, : width - width % 2 : 2])
    return [_chunked(level, chunk) for level in pyramid]


def _omero(classes: int, dtype: str) -> dict[str, Any]:
    """Display settings (names, colours, contrast 0..1 in stored units) for viewers."""
    top = 255 if dtype == "uint8" else 1.0
    window = {"min": 0, "max": top, "start": 0, "end": top}
    channels = [
        {"label": f"class {k}", "color": _COLORS[k % len(_COLORS)], "window": window, "active": k > 0 or classes == 1}
        for k in range(classes)
    ]  # class 0 of a multi-class model is the background: hidden
    return {"channels": channels, "rdefs": {"model": "color"}}


def _placement(axes: list[str], pixel_size: Any) -> dict[str, Any]:
    """``axes`` and, with a pixel size, its physical size and unit (each level's scale
    follows from the level's shape)."""
    if pixel_size is None:
        return {"axes": axes}
    spatial = [a for a in axes if a in "zyx"]
    sizes = dict(zip(spatial, ngff_scale(tuple(pixel_size)[-len(spatial) :], spatial)))
    return {"axes": axes, "scale": sizes, "axes_units": {a: ngff_axes(a)[0]["unit"] for a in spatial}}


def write_ome_zarr(
    path: str | os.PathLike,
    *,
    probabilities: Any = None,
    mask: Any = None,
    instances: Any = None,
    spatial_axes: str = "YX",
    dtype: str = "float16",
    chunk: int = 512,
    min_level_size: int = 256,
    pixel_size: Any = None,
) -> Path:
    """Write probabilities, mask and instance ids as one OME-Zarr store, atomically.

    Parameters
    ----------
    path : path-like
        The store to write, ``*.zarr`` (e.g. ``sample.ome.zarr``); replaced if it exists.
        Nothing is left at ``path`` if writing fails.
    probabilities : (Z, K, Y, X) array-like, optional
        Class probabilities in [0, 1] (``Z = 1`` for 2D images): the NGFF image.
    mask : (Y, X) or (Z, Y, X) integer array-like, optional
        The mask (class per pixel): label image ``labels/mask``.
    instances : (Y, X) or (Z, Y, X) integer array-like, optional
        Instance ids (0 = background): label image ``labels/instances``.
    spatial_axes : {"YX", "ZYX"}
        ``"YX"`` writes 2D images (probabilities must have ``Z = 1``), ``"ZYX"`` stacks.
    dtype : {"float16", "float32", "uint8"}
        Storage of the probabilities; ``uint8`` stores ``round(p * 255)``.
    chunk : int
        Chunk edge in ``Y`` and ``X`` (one channel and one plane per chunk).
    min_level_size : int
        The pyramid stops at the first level whose smaller side is at most this.
    pixel_size : sequence of float, optional
        µm per pixel, ``(Y, X)`` or ``(Z, Y, X)``: the spatial axes get the unit micrometer
        and every level a ``scale`` transformation, so napari shows micrometres.

    Inputs are read lazily: Zarr arrays chunk by chunk, so they may be larger than memory.
    At least one of ``probabilities``, ``mask`` and ``instances`` is needed; all must have
    the same spatial shape. See the module docstring for the layout.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        No input, inputs of the wrong shape or dtype, or an option out of range.
    """
    path = Path(path)
    if not is_zarr_path(path):
        raise InputError(f"{path}: an OME-Zarr store must be named *.zarr (e.g. sample.ome.zarr).")
    if spatial_axes not in ("YX", "ZYX"):
        raise InputError(f"{path}: spatial_axes must be 'YX' or 'ZYX', not {spatial_axes!r}.")
    if dtype not in PROBABILITY_DTYPES:
        raise InputError(f"{path}: probabilities are stored as one of {PROBABILITY_DTYPES}, not {dtype!r}.")
    if chunk < 1 or min_level_size < 1:
        raise InputError(f"{path}: chunk ({chunk}) and min_level_size ({min_level_size}) must be positive.")
    labels = {
        name: _label_image(array, name, spatial_axes, path)
        for name, array in (("mask", mask), ("instances", instances))
        if array is not None
    }
    if probabilities is not None:
        content, image = "probabilities", _probabilities(probabilities, spatial_axes, path)
    elif labels:
        content, image = next(iter(labels.items()))
    else:
        raise InputError(f"{path}: nothing to write; pass probabilities, mask and/or instances.")
    for name, array in labels.items():
        if array.shape[1:] != image.shape[1:]:
            raise InputError(
                f"{path}: {name} has spatial shape {array.shape[1:]} but the {content} have "
                f"{image.shape[1:]}; all inputs must come from the same image."
            )

    shapes = pyramid_shapes(image.shape, min_level_size)
    levels = len(shapes)
    axes = ["c", "y", "x"] if spatial_axes == "YX" else ["c", "z", "y", "x"]
    placement = _placement(axes, pixel_size)
    with atomic_path(path) as tmp:
        root = zarr.open_group(str(tmp), mode="w-", zarr_format=3)
        if content == "probabilities":
            pyramid = _image_pyramid(image, levels, dtype, chunk)
            extra = {"metadata": {"omero": _omero(image.shape[0], dtype)}}
        else:
            pyramid, extra = _label_pyramid(image, levels, chunk), {}
        write_multiscale(pyramid, root, name=content, **placement, **extra)
        scale = 1 / 255 if content == "probabilities" and dtype == "uint8" else 1.0
        root.attrs["unetseg"] = {"content": content, "scale": scale, "spatial_axes": spatial_axes}
        for name, array in labels.items():
            write_multiscale_labels(
                _label_pyramid(array, levels, chunk), root, name=name, **placement,
                label_metadata={"source": {"image": "../../"}},
            )  # fmt: skip
    return path
