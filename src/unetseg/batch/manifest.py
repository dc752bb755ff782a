"""A batch job's manifest (one row per sample: status, error, object count) and the
per-sample summary of a whole run, ``measurements/summary.csv``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from unetseg.io.files import atomic_path

__all__ = ["SUMMARY_COLUMNS", "write_manifest", "read_manifests", "write_summary", "failed_samples"]

SUMMARY_COLUMNS = (
    "sample", "split", "status", "object_count", "foreground_fraction", "mean_area", "median_area",
    "mean_intensity", "error",
)  # fmt: skip


def write_manifest(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    """One TSV row per sample of a batch job, written atomically."""
    frame = pd.DataFrame(list(rows))
    for column in SUMMARY_COLUMNS:
        if column not in frame:
            frame[column] = "" if column in ("error", "split", "status", "sample") else float("nan")
    extra = [c for c in frame.columns if c not in SUMMARY_COLUMNS]
    with atomic_path(path) as tmp:
        frame[[*SUMMARY_COLUMNS, *extra]].to_csv(tmp, sep="\t", index=False)


def read_manifests(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """The rows of several manifests, in order."""
    frames = [pd.read_csv(p, sep="\t", keep_default_na=True, dtype={"error": str}) for p in paths]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    frame["error"] = frame["error"].fillna("")
    return frame


def write_summary(manifests: Sequence[str | os.PathLike], output: str | os.PathLike) -> pd.DataFrame:
    """``measurements/summary.csv``: one row per segmented sample, failed ones with their reason,
    and the object counts per class of a multi-class model (``object_count_{class}``)."""
    frame = read_manifests(manifests)
    per_class = [c for c in frame.columns if c.startswith("object_count_")]
    frame = frame[[*SUMMARY_COLUMNS[:4], *per_class, *SUMMARY_COLUMNS[4:]]]
    with atomic_path(output) as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def failed_samples(summary: str | os.PathLike) -> list[tuple[str, str]]:
    """``(sample, reason)`` of every failed sample of a summary CSV (none if it is absent)."""
    if not Path(summary).exists():
        return []
    frame = pd.read_csv(summary, dtype={"error": str}).fillna({"error": ""})
    failed = frame[frame["status"] == "failed"]
    return list(zip(failed["sample"], failed["error"]))
