"""The report's Measurements figure: objects per image, their sizes and intensities."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from unetseg.report.figures import plt, save_figure

__all__ = ["measurements_figure"]


def measurements_figure(
    summary: pd.DataFrame, per_object_csvs: Sequence[str | os.PathLike], output: str | os.PathLike
) -> None:
    """Three panels: object count per image (failed images marked), the distribution of
    object areas and of mean object intensities (channel 0) over all images."""
    tables = [pd.read_csv(p) for p in per_object_csvs if os.path.exists(p)]
    objects = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), width_ratios=[3, 2, 2])
    counts = summary["object_count"].to_numpy(dtype=float)
    failed = (summary["status"] == "failed").to_numpy()
    positions = np.arange(len(summary))
    axes[0].bar(positions[~failed], np.nan_to_num(counts[~failed]), color="#0072B2")
    axes[0].bar(positions[failed], np.zeros(failed.sum()), color="#D55E00")
    for x in positions[failed]:
        axes[0].annotate("failed", (x, 0), rotation=90, ha="center", va="bottom", fontsize=7, color="#D55E00")
    step = max(1, len(summary) // 40)  # at most about 40 names on the axis
    axes[0].set_xticks(positions[::step], summary["sample"].to_numpy()[::step], rotation=90, fontsize=6)
    axes[0].set_title(f"objects per image ({len(summary)} images, {int(failed.sum())} failed)", fontsize=10)
    area = "area_um2" if "area_um2" in objects else "area"
    intensity = next((c for c in objects.columns if c.startswith("mean_intensity_")), None)
    for ax, column, title in ((axes[1], area, "object area"), (axes[2], intensity, "mean intensity (channel 0)")):
        values = objects[column].to_numpy(dtype=float) if column in objects else np.zeros(0)
        values = values[np.isfinite(values)]
        if values.size:
            ax.hist(values, bins=min(50, max(5, values.size // 10)), color="#009E73")
        ax.set_title(f"{title}, {values.size} objects", fontsize=10)
        ax.set_xlabel({"area_um2": "µm²", "area": "pixels"}.get(column or "", "raw intensity"), fontsize=8)
    fig.tight_layout()
    save_figure(fig, output)
