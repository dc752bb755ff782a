"""Bad input gets a clear error naming the file or key; awkward but valid input just works."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from unetseg.cli import main
from unetseg.data.patches import write_patches
from unetseg.data.preprocess import preprocess_sample
from unetseg.errors import InputError
from unetseg.nn.modelcard import save_model
from unetseg.workflow.config import check_config, config_errors

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def test_misspelt_config_keys_get_the_closest_key():
    schema = yaml.safe_load(SCHEMA.read_text())
    errors = config_errors({"dataset": "x", "samples": "s.tsv", "trian": {}, "model": {"dept": 3}}, schema)
    assert "unknown key 'trian'; did you mean 'train'?" in errors
    assert "unknown key 'model.dept'; did you mean 'depth'?" in errors


def test_wrong_types_and_ranges_name_the_key():
    with pytest.raises(InputError) as info:
        check_config({"dataset": "x", "samples": "s", "train": {"epochs": 0, "loss": "focal"}}, SCHEMA)
    message = str(info.value)
    assert "key 'train.epochs': 0 is less than the minimum of 1" in message
    assert "key 'train.loss': 'focal' is not one of" in message


def test_command_line_strings_become_numbers_and_booleans():
    config = {"dataset": "x", "samples": "s", "train": {"epochs": "5", "amp": "false", "loss": "dice"},
              "preprocess": {"percentiles": ["2", "98.5"]}, "tile": {"patch_size": "abc"}}  # fmt: skip
    with pytest.raises(InputError, match="key 'tile.patch_size': 'abc' is not of type 'integer'"):
        check_config(config, SCHEMA)
    assert config["train"] == {"epochs": 5, "amp": False, "loss": "dice"}
    assert config["preprocess"]["percentiles"] == [2, 98.5]


def write(path, array, **kwargs):
    tifffile.imwrite(path, array, **kwargs)
    return path


def test_infinite_value_anywhere_is_reported_with_its_position(tmp_path):
    image = np.ones((300, 300), np.float32)
    image[217, 131] = np.inf  # not on the statistics' sampling grid
    path = write(tmp_path / "inf.tif", image)
    with pytest.raises(InputError, match=r"inf.tif: NaN or infinite value at plane 0, channel 0, row 217, column 131"):
        preprocess_sample("s", path, tmp_path / "s.zarr", percentiles=(0, 100))
    assert not (tmp_path / "s.zarr").exists()


def test_probability_masks_are_refused(tmp_path):
    image = write(tmp_path / "img.tif", np.zeros((16, 16), np.uint8))
    mask = write(tmp_path / "mask.tif", np.full((16, 16), 0.7, np.float32))
    with pytest.raises(InputError, match="mask.tif: the mask holds fractional"):
        preprocess_sample("s", image, tmp_path / "s.zarr", mask_path=mask)


def test_samples_with_different_channel_counts_are_refused(tmp_path):
    one = write(tmp_path / "one.tif", np.zeros((32, 32), np.uint8))
    two = write(
        tmp_path / "two.tif", np.zeros((2, 32, 32), np.uint8), photometric="minisblack", metadata={"axes": "CYX"}
    )
    mask = write(tmp_path / "mask.tif", np.ones((32, 32), np.uint8))
    preprocess_sample("one", one, tmp_path / "one.zarr", mask_path=mask)
    preprocess_sample("two", two, tmp_path / "two.zarr", mask_path=mask, axes="CYX")
    with pytest.raises(InputError, match=r"1 channel\(s\) in 'one', 2 channel\(s\) in 'two'"):
        write_patches(
            tmp_path / "p.zarr", {"train": [tmp_path / "one.zarr"], "val": [tmp_path / "two.zarr"]}, patch_size=16
        )


def test_constant_small_and_empty_samples_just_work(tmp_path, capsys):
    image = write(tmp_path / "flat.tif", np.full((10, 13), 500, np.uint16))  # smaller than a patch
    empty = write(tmp_path / "empty.tif", np.zeros((10, 13), np.uint8))
    attrs = preprocess_sample("flat", image, tmp_path / "flat.zarr", mask_path=empty)
    assert attrs["foreground_fraction"] == 0
    assert "no foreground pixel" in capsys.readouterr().err
    counts = write_patches(
        tmp_path / "p.zarr", {"train": [tmp_path / "flat.zarr"], "val": [tmp_path / "flat.zarr"]}, patch_size=32
    )
    assert counts == {"train": 1, "val": 1}


def test_predict_on_a_constant_image(tiny_unet, tmp_path):
    save_model(
        tiny_unet(depth=2), tmp_path / "model", {"normalization": {"method": "percentile", "percentiles": [1, 99]}}
    )
    image = write(tmp_path / "flat.tif", np.full((37, 21), 9, np.uint16))
    assert (
        main(
            ["predict", "--model", str(tmp_path / "model"), "--input", str(image), "--output", str(tmp_path / "m.tif")]
        )
        == 0
    )
    assert tifffile.imread(tmp_path / "m.tif").shape == (37, 21)


def test_disk_full_is_reported_and_earlier_outputs_stay(tiny_unet, tmp_path, monkeypatch, capsys):
    save_model(
        tiny_unet(depth=2), tmp_path / "model", {"normalization": {"method": "percentile", "percentiles": [1, 99]}}
    )
    image = write(tmp_path / "img.tif", np.arange(600, dtype=np.uint16).reshape(20, 30))
    output = tmp_path / "mask.tif"
    args = ["predict", "--model", str(tmp_path / "model"), "--input", str(image), "--output", str(output)]
    assert main(args) == 0
    before = output.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(output))

    monkeypatch.setattr(tifffile, "imwrite", full_disk)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{output}: No space left on device" in err and "Traceback" not in err
    assert output.read_bytes() == before  # the earlier result is intact
    # No temporary file left; only the finished tiles, kept for the rerun.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".mask.tif.partial"]
    monkeypatch.undo()
    assert main(args) == 0 and "resuming" in capsys.readouterr().err
    assert output.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
