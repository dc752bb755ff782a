"""Sample-sheet checks: every problem names the line and the fix."""

from __future__ import annotations

import pandas as pd
import pytest

from unetseg.data.samples import check_sample_sheet, read_sample_sheet, rows_from_glob
from unetseg.errors import InputError


def sheet(*rows):
    return pd.DataFrame(rows, columns=["sample", "image", "mask", "split"])


GOOD = [("a", "a.tif", "am.tif", "train"), ("b", "b.tif", "bm.tif", "val"), ("c", "c.tif", None, "predict")]


def test_good_sheet_is_indexed_by_sample():
    checked = check_sample_sheet(sheet(*GOOD))
    assert list(checked.index) == ["a", "b", "c"] and checked.loc["c", "mask"] == ""


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([*GOOD, ("../x", "x.tif", "m.tif", "test")], "line 5 .*letters, digits"),
        ([*GOOD, ("d", "d.tif", "m.tif", "testing")], "split 'testing'"),
        ([*GOOD, ("d", "d.tif", "", "test")], "test samples need a mask"),
        ([*GOOD, ("a", "d.tif", "m.tif", "test")], r"\['a'\] appear more than once"),
        (GOOD[1:], "no 'train' rows"),
    ],
)
def test_bad_sheets_are_refused_with_the_reason(rows, message):
    with pytest.raises(InputError, match=message):
        check_sample_sheet(sheet(*rows), "samples.tsv")


def test_missing_columns_and_files(tmp_path):
    path = tmp_path / "s.tsv"
    path.write_text("sample\timage\nx\tx.tif\n")
    with pytest.raises(InputError, match=r"missing column\(s\) \['mask', 'split'\]"):
        read_sample_sheet(path)
    with pytest.raises(InputError, match="sample sheet not found"):
        read_sample_sheet(tmp_path / "none.tsv")


def test_an_images_glob_names_files_and_zarr_stores_not_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "batch" / "plate 1.tif").parent.mkdir()
    (tmp_path / "batch" / "plate 1.tif").write_bytes(b"")
    (tmp_path / "batch" / "well.zarr").mkdir()
    (tmp_path / "batch" / "well.zarr" / "zarr.json").write_text("{}")
    rows = rows_from_glob("batch/*")
    assert rows["sample"].tolist() == ["plate_1", "well"] and set(rows["split"]) == {"predict"}

    with pytest.raises(InputError, match=r"images: batch is a folder, not an image; .* 'batch/\*\.tif'"):
        rows_from_glob("batch")
    with pytest.raises(InputError, match=r"matches no file in .*; check the pattern"):
        rows_from_glob("elsewhere/*.tif")
