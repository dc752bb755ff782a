"""A probability output and its ledger of finished tiles, so that a rerun after a crash resumes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import zarr

__all__ = ["TileLedger", "create_output", "resumable_output"]


class TileLedger:
    """Which tiles of an output are finished: one empty marker file per tile.

    A marker is created only after the tile's probabilities are written, and creating an
    empty file is atomic, so after a crash every marked tile is complete and an unmarked
    one (perhaps half-written) is computed again.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _marker(self, z: int, index: int) -> Path:
        return self.directory / f"{z}.{index}"

    def done(self) -> set[tuple[int, int]]:
        return {tuple(int(part) for part in p.name.split(".")) for p in self.directory.iterdir()}

    def mark(self, z: int, index: int) -> None:
        self._marker(z, index).touch()


def create_output(
    path: str | os.PathLike,
    classes: int,
    tile: int,
    spatial_zyx: tuple[int, int, int],
    *,
    attributes: dict | None = None,
) -> zarr.Array:
    """A ``(Z, K, Y, X)`` float32 Zarr array chunked by tile."""
    z_count, height, width = spatial_zyx
    return zarr.create_array(
        str(path), shape=(z_count, classes, height, width), dtype="float32",
        chunks=(1, classes, min(tile, height), min(tile, width)), fill_value=np.nan,
        attributes={"axes": "ZCYX", "content": "probabilities", **(attributes or {})}, overwrite=True,
    )  # fmt: skip


def resumable_output(
    path: str | os.PathLike, classes: int, tile: int, spatial_zyx: tuple[int, int, int], *, fingerprint: str,
    attributes: dict | None = None,
) -> tuple[zarr.Array, TileLedger]:  # fmt: skip
    """The output array at ``path`` and its ledger: reopened if an interrupted run with
    the same ``fingerprint`` left them there, else created afresh."""
    path = Path(path)
    ledger_dir = path.with_name(path.name + ".tiles")
    try:
        existing = zarr.open_array(str(path), mode="r+")
        if existing.attrs.get("fingerprint") == fingerprint and ledger_dir.is_dir():
            return existing, TileLedger(ledger_dir)
    except (FileNotFoundError, ValueError, KeyError, zarr.errors.BaseZarrError):
        pass
    shutil.rmtree(ledger_dir, ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)
    attributes = {**(attributes or {}), "fingerprint": fingerprint}
    return create_output(path, classes, tile, spatial_zyx, attributes=attributes), TileLedger(ledger_dir)
