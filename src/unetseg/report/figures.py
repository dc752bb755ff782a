"""Figures for the report (matplotlib, Agg): the gallery of error maps, metric plots, training.

The per-image overlays are drawn without matplotlib, in :mod:`.overlays` (re-exported here).
Every image figure is drawn from a strided read of one plane (the middle one of a stack),
at most :data:`MAX_SIDE` pixels a side, so no figure needs a full-resolution image in memory.

Colours (Okabe-Ito, distinguishable with the common colour-vision deficiencies): true
contours green, predicted contours magenta; in error maps false positives (predicted,
not true) vermillion, false negatives (true, missed) blue, true positives pale yellow.
"""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from unetseg.io.files import atomic_path  # noqa: E402
from unetseg.report.overlays import (  # noqa: E402, F401 - colours and the overlay are used by callers too
    FALSE_NEGATIVE,
    FALSE_POSITIVE,
    MAX_SIDE,
    PRED_CONTOUR,
    TRUE_CONTOUR,
    TRUE_POSITIVE,
    contours,
    error_map,
    overlay_figure,
    thumbnail,
)

__all__ = [
    "overlay_figure",
    "training_curve_figure",
    "error_map",
    "gallery_figure",
    "metric_distributions_figure",
    "instance_curve_figure",
]


def save_figure(fig: Any, output: str | os.PathLike) -> None:
    """Write a figure as PNG, atomically, cropped to the drawn content."""
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _show(ax: Any, plane: np.ndarray, overlay: np.ndarray, title: str) -> None:
    ax.imshow(plane, cmap="gray", interpolation="nearest")
    ax.imshow(overlay, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def gallery_figure(
    rows: list[tuple[str, float, str | os.PathLike, str | os.PathLike]],
    output: str | os.PathLike,
    *,
    n_worst: int = 6,
    max_side: int = 256,
) -> None:
    """Error maps of the samples with the lowest Dice, worst first.

    Parameters
    ----------
    rows : list of (sample, dice, preprocessed path, prediction path)
    n_worst : int
        Number of samples shown, in rows of three.
    max_side : int
        Thumbnails are read on a stride to at most this many pixels a side.
    """
    worst = sorted(rows, key=lambda row: row[1])[:n_worst]
    cols = min(3, max(1, len(worst)))
    n_rows = max(1, -(-len(worst) // cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.3 * cols, 3.5 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (sample, score, preprocessed, prediction) in zip(axes.flat, worst):
        plane, truth, pred, _ = thumbnail(preprocessed, prediction, max_side)
        _show(ax, plane, error_map(truth, pred) if truth is not None else contours(None, pred),
              f"{sample}\nDice {score:.3f}")  # fmt: skip
    if not worst:
        axes[0, 0].text(0.5, 0.5, "no test images", ha="center", va="center")
    fig.suptitle("Worst test images by Dice (vermillion: false positive; blue: false negative)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, output)


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
    save_figure(fig, output)


SCORE_PANELS = (
    ("Overlap (higher is better)", ("dice", "iou", "precision", "recall", "f1_50", "mean_ap"), (0, 1.02)),
    ("Errors (lower is better)", ("pixel_error", "rand_error"), (0, None)),
    ("Boundary distance (px)", ("hd95",), (0, None)),
)


def metric_distributions_figure(per_image_csv: str | os.PathLike, output: str | os.PathLike) -> None:
    """Box plots with every image as a dot, for the main per-image scores.

    Non-finite values (HD95 of an image where one mask is empty, undefined scores) are left
    out of the boxes and counted in the axis label.
    """
    table = pd.read_csv(per_image_csv)
    fig, axes = plt.subplots(1, len(SCORE_PANELS), figsize=(11, 3.8), width_ratios=[6, 2, 1.3])
    jitter = np.random.default_rng(0)
    for ax, (title, names, ylim) in zip(axes, SCORE_PANELS):
        names = [n for n in names if n in table]
        data = [table[n].to_numpy(dtype=float) for n in names]
        finite = [d[np.isfinite(d)] for d in data]
        ax.boxplot(finite, showfliers=False, medianprops={"color": "black"})
        for k, values in enumerate(finite, start=1):
            ax.scatter(k + jitter.uniform(-0.15, 0.15, values.size), values, s=12, alpha=0.7, zorder=3)
        labels = [
            n if d.size == f.size else f"{n}\n({d.size - f.size} not finite)" for n, d, f in zip(names, data, finite)
        ]
        ax.set_xticks(range(1, len(names) + 1), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(*ylim)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Per-image scores over {len(table)} test image(s)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, output)


def instance_curve_figure(summary: dict[str, Any], output: str | os.PathLike) -> None:
    """Object-level precision, recall, F1 and AP against the IoU matching threshold.

    Parameters
    ----------
    summary : dict
        As :func:`unetseg.evaluation.evaluate`: ``instances`` (pooled over the test split)
        and ``per_image`` (its ``ap_XX`` columns are drawn as thin lines).
    """
    pooled = pd.DataFrame(summary["instances"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for row in summary["per_image"]:
        ax.plot(pooled["threshold"], [row.get(f"ap_{round(t * 100)}") for t in pooled["threshold"]],
                color="0.75", linewidth=0.8, zorder=1)  # fmt: skip
    for name, style in (("precision", "-o"), ("recall", "-s"), ("f1", "-^"), ("ap", "-D")):
        ax.plot(pooled["threshold"], pooled[name], style, markersize=4, label=name if name != "ap" else "AP (DSB 2018)")
    ax.plot([], [], color="0.75", linewidth=0.8, label="AP of each image")
    ax.set(xlabel="IoU threshold for a match", ylabel="score", ylim=(0, 1.02),
           title=f"Objects: {int(pooled['tp'].iloc[0] + pooled['fn'].iloc[0])} true, "
                 f"{int(pooled['tp'].iloc[0] + pooled['fp'].iloc[0])} predicted")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, output)


def confusion_figure(summary: dict[str, Any], output: str | os.PathLike) -> None:
    """The pooled pixel confusion matrix of the test split: each true class's row as shares
    of its pixels (colour and percentage), with the pixel counts.

    Parameters
    ----------
    summary : dict
        As :func:`unetseg.evaluation.evaluate`: ``confusion`` (``classes`` and ``counts``).
    """
    names, counts = summary["confusion"]["classes"], np.asarray(summary["confusion"]["counts"], dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = 1.2 + 0.9 * len(names)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), share in np.ndenumerate(shares):
        ax.text(j, i, f"{share:.1%}\n{int(counts[i, j]):,}", ha="center", va="center", fontsize=8,
                color="white" if share > 0.6 else "black")  # fmt: skip
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted class", ylabel="true class", title="Pixels of each true class")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class's pixels")
    fig.tight_layout()
    save_figure(fig, output)
