"""Per-sample preprocessing: checks, intensity normalisation, foreground masks, Zarr.

A preprocessed sample is a Zarr group with

``image`` : (Z, C, Y, X) float32
    Intensities normalised per channel by percentiles of the whole image.
``mask`` : (Z, Y, X) uint8, optional
    1 where the ground truth is foreground (after ``labels.foreground``), else 0.

and attributes under ``"unetseg"`` recording the source axes, spatial shape and the
normalisation applied. 2D images have ``Z = 1``; 2D masks are stored as ``(1, Y, X)``.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .errors import InputError
from .io import ImageSource, atomic_path, open_image, read_mask

__all__ = [
    "check_finite",
    "percentile_stats",
    "normalize",
    "foreground_mask",
    "preprocess_sample",
    "open_preprocessed",
]

FORMAT = 1
ROWS_PER_BLOCK = 1024  # rows read at once when streaming an image plane


def percentile_stats(
    source: ImageSource, low: float, high: float, *, max_samples: int = 2**22
) -> list[tuple[float, float]]:
    """Per-channel ``(low, high)`` percentiles of the whole image, read plane by plane.

    Large images are subsampled on a regular stride so that at most about ``max_samples``
    pixels per channel are held; the stride is deterministic, so are the statistics.

    Returns
    -------
    list of (float, float)
        One ``(p_low, p_high)`` pair per channel.
    """
    z_count, channels, height, width = source.shape
    stride = max(1, math.ceil(math.sqrt(z_count * height * width / max_samples)))
    z_step = max(1, math.ceil(z_count * (height // stride + 1) * (width // stride + 1) / max_samples))
    samples = [
        source.read(z, slice(None, None, stride), slice(None, None, stride)).reshape(channels, -1)
        for z in range(0, z_count, z_step)
    ]
    values = np.concatenate(samples, axis=1).astype(np.float64)
    # Non-finite pixels are left out here; writing or predicting reports where they are.
    values[~np.isfinite(values)] = np.nan
    if np.isnan(values).all(axis=1).any():
        raise InputError(f"{source.path}: a channel has no finite value; check the image.")
    lo, hi = np.nanpercentile(values, [low, high], axis=1)
    return [(float(a), float(b)) for a, b in zip(lo, hi)]


def check_finite(block: np.ndarray, path: Any, z: int, y0: int = 0, x0: int = 0) -> None:
    """Raise :class:`InputError` naming the first NaN or infinite pixel of a ``(C, y, x)`` block."""
    if np.isfinite(block).all():
        return
    c, y, x = np.argwhere(~np.isfinite(block))[0]
    raise InputError(
        f"{path}: NaN or infinite value at plane {z}, channel {c}, row {y0 + y}, column {x0 + x}; "
        "replace such values (e.g. with 0) before segmenting."
    )


def normalize(block: np.ndarray, stats: Sequence[tuple[float, float]]) -> np.ndarray:
    """Map each channel's ``(p_low, p_high)`` to ``(0, 1)``; ``block`` is ``(C, ...)``.

    A constant channel (``p_high == p_low``) maps to 0 instead of dividing by zero.
    """
    out = np.empty(block.shape, dtype=np.float32)
    for c, (lo, hi) in enumerate(stats):
        scale = 1.0 / (hi - lo) if hi > lo else 0.0
        with np.errstate(invalid="ignore"):  # inf * 0: NaN, reported by check_finite
            out[c] = (block[c].astype(np.float32) - np.float32(lo)) * np.float32(scale)
    return out


def foreground_mask(mask: np.ndarray, foreground: str | Sequence[int] = "nonzero") -> np.ndarray:
    """Binary ground truth: ``True`` where ``mask`` is foreground.

    Parameters
    ----------
    mask : ndarray
        Ground truth values (binary, instance ids or class values).
    foreground : "nonzero" or sequence of int
        ``"nonzero"``: every nonzero value is foreground. A list: exactly those values are
        foreground (``[0]`` for ISBI 2012 membranes, which are stored as 0).
    """
    if isinstance(foreground, str):
        if foreground != "nonzero":
            raise InputError(f"labels.foreground must be 'nonzero' or a list of values, not {foreground!r}")
        return mask != 0
    return np.isin(mask, np.asarray(list(foreground)))


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


def _write_image(group: zarr.Group, source: ImageSource, stats: list[tuple[float, float]], chunk: int) -> None:
    z_count, channels, height, width = source.shape
    image = group.create_array(
        "image", shape=source.shape, dtype="float32",
        chunks=(1, channels, min(chunk, height), min(chunk, width)),
    )  # fmt: skip
    for z in range(z_count):
        for y0 in range(0, height, ROWS_PER_BLOCK):
            rows = slice(y0, min(y0 + ROWS_PER_BLOCK, height))
            block = normalize(source.read(z, rows), stats)
            check_finite(block, source.path, z, y0)
            image[z, :, rows, :] = block


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
) -> dict[str, Any]:
    """Check one sample, normalise it and write it as a preprocessed Zarr group.

    The group is written under a temporary name and moved to ``output`` when complete.

    Returns
    -------
    dict
        The attributes stored with the group.
    """
    with open_image(image_path, axes=axes) as source:
        stats = percentile_stats(source, *percentiles)
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
            "normalization": {"method": "percentile", "percentiles": list(percentiles), "stats": [list(s) for s in stats]},
        }
        truth = None
        if mask_path:
            raw = read_mask(mask_path, source.spatial_shape)
            _check_mask_values(raw, mask_path)
            truth = foreground_mask(raw, foreground).reshape(source.shape[0], *source.shape[2:])
            attrs["foreground_fraction"] = float(truth.mean())
            if not truth.any():
                print(
                    f"warning: {mask_path}: no foreground pixel with labels.foreground = {foreground!r}; "
                    "fine for an empty image, otherwise check labels.foreground.",
                    file=sys.stderr,
                )
        with atomic_path(output) as tmp:
            group = zarr.open_group(str(tmp), mode="w")
            _write_image(group, source, stats, chunk)
            if truth is not None:
                group.create_array("mask", data=truth.astype(np.uint8), chunks=(1, *group["image"].chunks[2:]))
            group.attrs["unetseg"] = attrs
    return attrs


def open_preprocessed(path: str | os.PathLike) -> tuple[zarr.Group, dict[str, Any]]:
    """Open a preprocessed sample; returns the group and its ``unetseg`` attributes."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: preprocessed sample not found; run the workflow's preprocess step first.")
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs).get("unetseg")
    if not attrs or attrs.get("format") != FORMAT:
        raise InputError(f"{path}: not a preprocessed unetseg sample (format {FORMAT}); rerun preprocessing.")
    return group, attrs
