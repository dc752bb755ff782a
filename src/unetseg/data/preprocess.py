"""Per-sample preprocessing: checks, intensity normalisation, foreground and objects, Zarr.

The only stage that reads the raw image and mask files; it writes the preprocessed sample
that every later stage reads (layout in :mod:`unetseg.data.sample`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from unetseg.data.masks import class_map, foreground_mask
from unetseg.data.normalize import check_finite, normalize, percentile_stats
from unetseg.data.sample import FORMAT
from unetseg.data.targets import DEFAULT_SEPARATION, SEPARATIONS, contact_target, separated_foreground
from unetseg.errors import InputError
from unetseg.io.files import atomic_path
from unetseg.io.images import ImageSource, open_image, read_mask
from unetseg.io.pixelsize import read_pixel_size
from unetseg.objects.labels import class_objects, has_instance_ids, true_instances

__all__ = ["preprocess_sample"]

ROWS_PER_BLOCK = 1024  # rows read at once when streaming an image plane
# Value of non-finite (missing) pixels after normalisation with missing="fill": the low
# percentile, i.e. background-like; they are already left out of the statistics.
MISSING_FILL = 0.0


def _check_mask_values(mask: np.ndarray, path: str | os.PathLike) -> None:
    """Masks hold labels: integers (or booleans), not probabilities or intensities."""
    if mask.dtype.kind == "f":
        if not np.isfinite(mask).all() or not np.array_equal(mask, np.round(mask)):
            raise InputError(
                f"{path}: the mask holds fractional or non-finite values; masks must hold integer "
                "labels (0 = background). Threshold or round it, and save it as an integer TIFF."
            )
    elif mask.dtype.kind not in "biu":
        raise InputError(f"{path}: masks must be integer or boolean images, not {mask.dtype}.")


def _true_objects(mask: np.ndarray, foreground: str | Sequence[int]) -> np.ndarray:
    """``(Z, Y, X)`` int32 true objects of each plane: instance ids, or components."""
    return np.stack([true_instances(plane, foreground) for plane in mask]).astype(np.int32)


def _write_image(
    group: zarr.Group, source: ImageSource, stats: list[tuple[float, float]], chunk: int, missing: str
) -> int:
    """Write the normalised image; returns the number of non-finite pixels filled."""
    z_count, channels, height, width = source.shape
    image = group.create_array(
        "image", shape=source.shape, dtype="float32",
        chunks=(1, channels, min(chunk, height), min(chunk, width)),
    )  # fmt: skip
    filled = 0
    for z in range(z_count):
        for y0 in range(0, height, ROWS_PER_BLOCK):
            rows = slice(y0, min(y0 + ROWS_PER_BLOCK, height))
            block = normalize(source.read(z, rows), stats)
            if missing == "error":
                check_finite(block, source.path, z, y0)
            else:
                bad = ~np.isfinite(block)
                filled += int(bad.sum())
                block[bad] = MISSING_FILL
            image[z, :, rows, :] = block
    return filled


def preprocess_sample(
    sample: str,
    image_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    mask_path: str | os.PathLike | None = None,
    foreground: str | Sequence[int] = "nonzero",
    percentiles: tuple[float, float] = (1.0, 99.8),
    axes: str | None = None,
    chunk: int = 256,
    missing: str = "error",
    pixel_size: Any = None,
    separate: bool | str = True,
    classes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Check one sample, normalise it and write it as a preprocessed Zarr group.

    The group is written under a temporary name and moved to ``output`` when complete.

    ``missing="error"`` (training data) refuses NaN or infinite pixels; ``"fill"`` (images
    to segment) treats them as missing data: left out of the normalisation statistics (as
    always), set to :data:`MISSING_FILL` after normalisation, counted in the attributes
    (``nonfinite_pixels``) and named in a warning. ``pixel_size`` (µm, ``(Y, X)`` or
    ``(Z, Y, X)``) overrides what the image file records; either is stored in the attributes.
    With ``separate`` and a mask of instance ids, the training target keeps touching objects
    apart (``labels.separate_touching``): ``"line"`` with a background line
    (:func:`unetseg.data.targets.separated_foreground`), ``"contact"`` (or True) with a class
    of its own for the contact pixels (:func:`unetseg.data.targets.contact_target`); the attributes
    record which as ``target`` (``"foreground"`` when the target is the plain mask).
    With ``classes`` (``labels.classes``, checked by :func:`unetseg.data.masks.check_classes`)
    the stored mask holds class indices 0..C instead of 0/1, the objects are the connected
    components of each class, and mask values no class lists count as background (a
    warning names them; the attributes record them as ``unlisted_values``/``unlisted_pixels``).

    Returns
    -------
    dict
        The attributes stored with the group.
    """
    with open_image(image_path, axes=axes) as source:
        stats = percentile_stats(source, *percentiles)
        if pixel_size is None:
            pixel_size = read_pixel_size(image_path)
        attrs: dict[str, Any] = {
            "format": FORMAT,
            "sample": sample,
            "image": str(image_path),
            "mask": str(mask_path) if mask_path else None,
            "source_axes": source.axes,
            "source_dtype": str(source.dtype),
            "spatial_axes": source.spatial_axes,
            "spatial_shape": list(source.spatial_shape),
            "channels": source.shape[1],
            "foreground": foreground if isinstance(foreground, str) else list(foreground),
            "pixel_size": None if pixel_size is None else [float(s) for s in pixel_size],
            "normalization": {
                "method": "percentile",
                "percentiles": list(percentiles),
                "stats": [list(s) for s in stats],
            },
        }
        attrs["classes"] = {name: [int(v) for v in values] for name, values in classes.items()} if classes else None
        truth = target = None
        if mask_path:
            raw = read_mask(mask_path, source.spatial_shape)
            _check_mask_values(raw, mask_path)
            planes = (source.shape[0], *source.shape[2:])
            if classes:
                truth, unlisted = class_map(raw.reshape(planes), classes)
                objects = np.stack([class_objects(plane) for plane in truth])
                attrs["instance_ids"] = False
                if unlisted.size:
                    attrs["unlisted_values"] = [int(v) for v in unlisted]
                    attrs["unlisted_pixels"] = int(np.isin(raw, unlisted).sum())
                    print(
                        f"warning: {mask_path}: mask value(s) {attrs['unlisted_values']} ({attrs['unlisted_pixels']} "
                        "pixels) belong to no class of labels.classes and count as background; add them to a "
                        "class if they are not background.",
                        file=sys.stderr,
                    )
            else:
                truth = foreground_mask(raw, foreground).reshape(planes)
                objects = _true_objects(raw.reshape(planes), foreground)
                attrs["instance_ids"] = bool(has_instance_ids(raw, foreground))
            # Touching objects apart in what the network learns (the stored mask stays the truth).
            separation = DEFAULT_SEPARATION if separate is True else separate or None
            if separation is not None and separation not in SEPARATIONS:
                raise InputError(f"separate must be one of {SEPARATIONS}, True or False, not {separate!r}")
            attrs["target"] = "foreground"
            if separation and attrs["instance_ids"]:
                make = separated_foreground if separation == "line" else contact_target
                target = np.stack([make(plane) for plane in objects])
                attrs["target"] = separation
            attrs["foreground_fraction"] = float((truth > 0).mean())
            if not truth.any():
                print(
                    f"warning: {mask_path}: no foreground pixel with labels.foreground = {foreground!r}; "
                    "fine for an empty image, otherwise check labels.foreground.",
                    file=sys.stderr,
                )
        with atomic_path(output) as tmp:
            group = zarr.open_group(str(tmp), mode="w")
            filled = _write_image(group, source, stats, chunk, missing)
            if filled:
                attrs["nonfinite_pixels"] = filled
                print(
                    f"warning: {image_path} (sample {sample}): {filled} NaN or infinite pixel(s) treated as "
                    f"missing: left out of the statistics and measurements, set to {MISSING_FILL} after "
                    "normalisation.",
                    file=sys.stderr,
                )
            if truth is not None:
                chunks = (1, *group["image"].chunks[2:])
                group.create_array("mask", data=truth.astype(np.uint8), chunks=chunks)
                group.create_array("objects", data=objects, chunks=chunks)
                if target is not None:
                    group.create_array("target", data=target.astype(np.uint8), chunks=chunks)
            group.attrs["unetseg"] = attrs
    return attrs
