"""The sample sheet: a TSV with columns ``sample``, ``image``, ``mask``, ``split``.

:func:`check_sample_sheet` decides, before any work starts, everything that can be decided
from the sheet alone; :func:`read_sample_sheet` reads and checks one.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import pandas as pd

from unetseg.errors import InputError
from unetseg.io.images import is_zarr_store

__all__ = ["COLUMNS", "SPLITS", "read_sample_sheet", "check_sample_sheet", "rows_from_glob"]

COLUMNS = ("sample", "image", "mask", "split")
SPLITS = ("train", "val", "test", "predict")
SAMPLE_ID = re.compile(r"[A-Za-z0-9._-]+")


def check_sample_sheet(sheet: pd.DataFrame, source: str = "sample sheet", *, training: bool = True) -> pd.DataFrame:
    """Check a sample sheet and return it with empty masks as ``""``, indexed by sample.

    Parameters
    ----------
    sheet : DataFrame
        Rows of the sheet, columns :data:`COLUMNS` (more are kept).
    source : str
        Name used in error messages (the sheet's path).
    training : bool
        Whether the run trains a model, which needs ``train`` and ``val`` rows.

    Raises
    ------
    InputError
        Naming the row and column, what is wrong and how to fix it.
    """
    missing = [c for c in COLUMNS if c not in sheet.columns]
    if missing:
        raise InputError(
            f"{source}: missing column(s) {missing}; the header row must name {', '.join(COLUMNS)} (tab-separated)."
        )
    sheet = sheet.copy()
    sheet["mask"] = sheet["mask"].fillna("").astype(str).str.strip()
    for row, record in enumerate(sheet.itertuples(index=False), start=2):
        where = f"{source}, line {row} (sample {record.sample!r})"
        if not isinstance(record.sample, str) or not SAMPLE_ID.fullmatch(record.sample) or record.sample in (".", ".."):
            raise InputError(f"{where}: sample ids may use only letters, digits, '.', '_' and '-'; rename it.")
        if record.split not in SPLITS:
            raise InputError(f"{where}: split {record.split!r} is not one of {', '.join(SPLITS)}.")
        if not isinstance(record.image, str) or not record.image.strip():
            raise InputError(f"{where}: the 'image' column is empty; give the image's path.")
        if record.split != "predict" and not record.mask:
            raise InputError(
                f"{where}: {record.split} samples need a mask; fill the 'mask' column or use split 'predict'."
            )
    duplicated = sheet["sample"][sheet["sample"].duplicated()].unique().tolist()
    if duplicated:
        raise InputError(f"{source}: sample id(s) {duplicated} appear more than once; ids must be unique.")
    _check_unique_images(sheet, source)
    if training:
        for split in ("train", "val"):
            if not (sheet["split"] == split).any():
                raise InputError(f"{source}: no '{split}' rows; training needs at least one train and one val sample.")
    return sheet.set_index("sample", drop=False)


def _check_unique_images(sheet: pd.DataFrame, source: str) -> None:
    """One file, one row: the same image in two rows (say train and test) is an error."""
    seen: dict[str, tuple[int, str, str]] = {}
    for row, record in enumerate(sheet.itertuples(index=False), start=2):
        key = os.path.normpath(os.path.abspath(record.image))
        if key in seen:
            line, sample, split = seen[key]
            raise InputError(
                f"{source}, lines {line} and {row}: samples {sample!r} ({split}) and {record.sample!r} "
                f"({record.split}) name the same image {record.image}; an image belongs in one row only "
                "(a test image that was also trained on would score too well)."
            )
        seen[key] = (row, record.sample, record.split)


def rows_from_glob(pattern: str) -> pd.DataFrame:
    """One ``predict`` row per file matching ``pattern`` (the config's ``images``).

    Ids come from the file names without their suffix, with every character that ids do not
    allow replaced by ``_``. Two files that would get the same id are an error naming both.
    """
    paths = sorted(glob.glob(pattern, recursive=True))
    if not paths:
        raise InputError(
            f"images: {pattern!r} matches no file in {Path.cwd()}; check the pattern (relative to the "
            "directory Snakemake runs in)."
        )
    folders = [path for path in paths if Path(path).is_dir() and not is_zarr_store(path)]
    if folders:  # a folder is not an image (a Zarr store is)
        raise InputError(
            f"images: {folders[0]} is a folder, not an image; give a pattern of its files, e.g. "
            f"'{Path(folders[0]) / '*.tif'}'."
        )
    ids: dict[str, str] = {}
    for path in paths:
        name = Path(path).name
        for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".zarr"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        sample = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "image"
        if sample in ids:
            raise InputError(
                f"images: {ids[sample]} and {path} would both get the sample id {sample!r}; rename one of "
                "them, or list them in a sample sheet with ids of your own."
            )
        ids[sample] = path
    return pd.DataFrame({"sample": list(ids), "image": list(ids.values()), "mask": "", "split": "predict"})


def read_sample_sheet(path: str | os.PathLike, *, training: bool = True) -> pd.DataFrame:
    """Read and check a tab-separated sample sheet (see :func:`check_sample_sheet`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: sample sheet not found; set 'samples' in the config to its path.")
    sheet = pd.read_csv(path, sep="\t", dtype=str, comment="#", skip_blank_lines=True)
    return check_sample_sheet(sheet, str(path), training=training)
