"""Per-image overlays for the report, composed with NumPy and written with Pillow.

The segment jobs draw one overlay per image, by the hundred, so this module avoids
matplotlib: composing the panels in NumPy and encoding one PNG takes milliseconds where a
matplotlib figure took about 0.2 s per image, and the segment command does not import
matplotlib at all. The summary figures of the report stay in :mod:`.figures`.

Every overlay is drawn from a strided read of one plane (the middle one of a stack), at
most :data:`MAX_SIDE` pixels a side, so no overlay needs a full-resolution image in memory.

Colours (Okabe-Ito, distinguishable with the common colour-vision deficiencies): true
contours green, predicted contours magenta; in error maps false positives (predicted, not
true) vermillion, false negatives (true, missed) blue, true positives pale yellow.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage.segmentation import find_boundaries

from unetseg.data.sample import open_sample
from unetseg.io.files import atomic_path
from unetseg.io.images import open_image

__all__ = ["MAX_SIDE", "MIN_SIDE", "error_map", "thumbnail", "overlay_figure"]

MAX_SIDE = 1024  # overlays of larger planes are drawn from a strided view
MIN_SIDE = 384  # smaller planes are enlarged (nearest neighbour) so that contours show
TRUE_CONTOUR, PRED_CONTOUR = (0.1, 0.9, 0.2, 1.0), (1.0, 0.1, 0.9, 1.0)
FALSE_POSITIVE, FALSE_NEGATIVE, TRUE_POSITIVE = (0.84, 0.37, 0.0, 1.0), (0.0, 0.45, 0.7, 1.0), (1.0, 0.95, 0.6, 0.45)
GAP, FONT_SIZE = 8, 13


def thumbnail(
    preprocessed: str | os.PathLike, prediction: str | os.PathLike | np.ndarray, max_side: int = MAX_SIDE
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, dict[str, Any]]:
    """Middle plane of image, truth and prediction, read on a stride.

    ``prediction`` is a mask file, or the mask itself, ``(Y, X)`` or ``(Z, Y, X)`` (the
    batch's images that fit in memory: nothing is read back).

    Returns
    -------
    plane : (y, x) ndarray of float
        First channel, clipped to the normalised range [0, 1].
    truth : (y, x) ndarray of bool, or None
        Ground truth, if the sample has one.
    pred : (y, x) ndarray of bool
    attrs : dict
        The preprocessed sample's attributes.
    """
    sample = open_sample(preprocessed)
    image, attrs = sample.image, sample.attrs
    z = image.shape[0] // 2
    step = max(1, -(-max(image.shape[2:]) // max_side))
    view = (slice(None, None, step), slice(None, None, step))
    plane = np.clip(image.read(z, *view)[0], 0, 1)
    if isinstance(prediction, np.ndarray):
        pred = (prediction if prediction.ndim == 2 else prediction[z])[view] > 0
    else:
        with open_image(prediction, axes=attrs["spatial_axes"]) as source:
            pred = source.read(z, *view)[0] > 0
    truth = sample.mask.read(z, *view)[0] > 0 if sample.has_mask else None
    return plane, truth, pred, attrs


def error_map(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """RGBA overlay of true positives, false positives and false negatives.

    Parameters
    ----------
    truth, pred : (y, x) ndarray of bool

    Returns
    -------
    (y, x, 4) ndarray of float64
        Transparent where both masks are background.
    """
    rgba = np.zeros((*truth.shape, 4))
    rgba[truth & pred] = TRUE_POSITIVE
    rgba[pred & ~truth] = FALSE_POSITIVE
    rgba[truth & ~pred] = FALSE_NEGATIVE
    return rgba


def contours(truth: np.ndarray | None, pred: np.ndarray) -> np.ndarray:
    """RGBA overlay of the predicted (and, if given, the true) object outlines."""
    rgba = np.zeros((*pred.shape, 4))
    if truth is not None:
        rgba[find_boundaries(truth, mode="inner")] = TRUE_CONTOUR
    rgba[find_boundaries(pred, mode="inner")] = PRED_CONTOUR
    return rgba


def composite(plane: np.ndarray, overlay: np.ndarray) -> np.ndarray:
    """``(y, x, 3)`` uint8: the grey ``plane`` (values in [0, 1]) under the RGBA ``overlay``."""
    grey = np.round(plane * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., np.newaxis], 3, axis=2)
    drawn = overlay[..., 3] > 0  # blend only the coloured pixels
    alpha = overlay[drawn][:, 3:]
    blended = grey[drawn][:, np.newaxis] * (1 - alpha) + overlay[drawn][:, :3] * 255 * alpha
    rgb[drawn] = np.round(blended).astype(np.uint8)
    return rgb


def overlay_figure(
    preprocessed: str | os.PathLike,
    prediction: str | os.PathLike | np.ndarray,
    output: str | os.PathLike,
    *,
    dice: float | None = None,
) -> None:
    """Image with the predicted contour (magenta) and, if known, the true contour (green).

    With a ground truth, a second panel shows the error map: false positives vermillion,
    false negatives blue. Above the panels: the sample's name (and Dice) and the legend.
    Written as PNG, atomically. ``prediction``: the mask file, or the mask (:func:`thumbnail`).
    """
    plane, truth, pred, attrs = thumbnail(preprocessed, prediction)
    panels = [composite(plane, contours(truth, pred))]
    legend = ["magenta: prediction" + ("; green: ground truth" if truth is not None else "")]
    if truth is not None:
        panels.append(composite(plane, error_map(truth, pred)))
        legend.append("errors: vermillion false positive, blue false negative")
    scale = max(1, -(-MIN_SIDE // max(plane.shape)))
    if scale > 1:
        panels = [panel.repeat(scale, axis=0).repeat(scale, axis=1) for panel in panels]
    height, width = panels[0].shape[:2]
    font = ImageFont.load_default(size=FONT_SIZE)
    title = attrs["sample"] + (f"  (Dice {dice:.3f})" if dice is not None else "")
    lines = [title, *legend]
    header = GAP + len(lines) * (FONT_SIZE + 4)
    canvas = Image.new("RGB", (len(panels) * width + (len(panels) + 1) * GAP, header + height + GAP), "white")
    for k, panel in enumerate(panels):
        canvas.paste(Image.fromarray(panel), (GAP + k * (width + GAP), header))
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        draw.text((GAP, GAP // 2 + k * (FONT_SIZE + 4)), line, fill="black", font=font)
    with atomic_path(output) as tmp:
        canvas.save(tmp, format="PNG", compress_level=1)
