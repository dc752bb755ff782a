"""Sample-sheet checks: every problem names the line and the fix."""

from __future__ import annotations

import pandas as pd
import pytest

from unetseg.data.samples import check_sample_sheet, read_sample_sheet
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
