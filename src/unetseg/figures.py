"""Figures for the report: segmentation overlays and the training curve (matplotlib, Agg)."""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

from .io import ImageSource, atomic_path, open_image  # noqa: E402
from .preprocess import open_preprocessed  # noqa: E402

__all__ = ["overlay_figure", "training_curve_figure"]

MAX_SIDE = 1024  # overlays of larger planes are drawn from a strided view


def _save(fig: Any, output: str | os.PathLike) -> None:
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def overlay_figure(
    preprocessed: str | os.PathLike, prediction: str | os.PathLike, output: str | os.PathLike, *, dice: float | None = None
) -> None:
    """Image with the predicted contour (magenta) and, if known, the true contour (green).

    The middle plane of a stack is shown; large planes are subsampled on a stride so the
    figure never needs the full-resolution image in memory.
    """
    group, attrs = open_preprocessed(preprocessed)
    image = ImageSource(group["image"], "ZCYX")
    z = image.shape[0] // 2
    step = max(1, -(-max(image.shape[2:]) // MAX_SIDE))
    view = (slice(None, None, step), slice(None, None, step))
    plane = np.clip(image.read(z, *view)[0], 0, 1)
    with open_image(prediction, axes=attrs["spatial_axes"]) as source:
        pred = source.read(z, *view)[0] > 0
    fig, ax = plt.subplots(figsize=(6, 6 * plane.shape[0] / plane.shape[1]))
    ax.imshow(plane, cmap="gray", interpolation="nearest")
    rgba = np.zeros((*plane.shape, 4))
    if "mask" in group:
        truth = ImageSource(group["mask"], "ZYX").read(z, *view)[0] > 0
        rgba[find_boundaries(truth, mode="inner")] = (0.1, 0.9, 0.2, 1)
    rgba[find_boundaries(pred, mode="inner")] = (1, 0.1, 0.9, 1)
    ax.imshow(rgba, interpolation="nearest")
    title = attrs["sample"] + (f"  (Dice {dice:.3f})" if dice is not None else "")
    legend = "magenta: prediction" + ("; green: ground truth" if "mask" in group else "")
    ax.set_title(f"{title}\n{legend}", fontsize=9)
    ax.set_axis_off()
    _save(fig, output)


def training_curve_figure(history_csv: str | os.PathLike, output: str | os.PathLike) -> None:
    """Training and validation loss, and validation Dice, per epoch."""
    history = pd.read_csv(history_csv)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(history["epoch"], history["train_loss"], label="train")
    left.plot(history["epoch"], history["val_loss"], label="validation")
    left.set(xlabel="epoch", ylabel="loss", title="Loss")
    left.legend()
    right.plot(history["epoch"], history["val_dice"], color="tab:green")
    best = history["val_dice"].idxmax()
    right.scatter(history["epoch"][best], history["val_dice"][best], color="black", zorder=3, label="kept")
    right.set(xlabel="epoch", ylabel="Dice", title="Validation Dice", ylim=(0, 1))
    right.legend()
    fig.tight_layout()
    _save(fig, output)
