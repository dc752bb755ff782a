"""The sample sheet: a TSV with columns ``sample``, ``image``, ``mask``, ``split``.

:func:`check_sample_sheet` decides, before any work starts, everything that can be decided
from the sheet alone; :func:`read_sample_sheet` reads and checks one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from unetseg.errors import InputError

__all__ = ["COLUMNS", "SPLITS", "read_sample_sheet", "check_sample_sheet"]

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
    if training:
        for split in ("train", "val"):
            if not (sheet["split"] == split).any():
                raise InputError(f"{source}: no '{split}' rows; training needs at least one train and one val sample.")
    return sheet.set_index("sample", drop=False)


def read_sample_sheet(path: str | os.PathLike, *, training: bool = True) -> pd.DataFrame:
    """Read and check a tab-separated sample sheet (see :func:`check_sample_sheet`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: sample sheet not found; set 'samples' in the config to its path.")
    sheet = pd.read_csv(path, sep="\t", dtype=str, comment="#", skip_blank_lines=True)
    return check_sample_sheet(sheet, str(path), training=training)
