"""An inference killed with SIGKILL recomputes only the tiles it had not finished."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import numpy as np
import tifffile
import zarr

from unetseg.data.preprocess import preprocess_sample
from unetseg.nn.modelcard import save_model


def kill_after_tiles(command: list[str], ledger, count: int) -> None:
    """Start ``command`` and SIGKILL it once its ledger lists ``count`` finished tiles."""
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if ledger.is_dir() and len(list(ledger.iterdir())) >= count:
            break
        time.sleep(0.01)
    process.kill()
    process.wait()


def test_killed_inference_recomputes_only_missing_tiles(tiny_unet, tmp_path, rng):
    save_model(
        tiny_unet(depth=2), tmp_path / "model", {"normalization": {"method": "percentile", "percentiles": [1, 99]}}
    )
    tifffile.imwrite(tmp_path / "image.tif", rng.integers(0, 60000, (512, 640), dtype=np.uint16))
    preprocess_sample("big", tmp_path / "image.tif", tmp_path / "big.zarr")

    def infer(output):
        return [sys.executable, "-m", "unetseg", "infer", "--model", str(tmp_path / "model"), "--input",
                str(tmp_path / "big.zarr"), "--output", str(output), "--tile", "32", "--batch-size", "1",
                "--threads", "1"]  # fmt: skip

    subprocess.run(infer(tmp_path / "reference.zarr"), check=True, capture_output=True)
    output = tmp_path / "probs.zarr"
    ledger = tmp_path / ".probs.zarr.partial.tiles"
    kill_after_tiles(infer(output), ledger, 20)
    assert not output.exists()  # the final name appears only when complete

    rerun = subprocess.run(infer(output), check=True, capture_output=True, text=True)
    done, total = map(int, re.search(r"resuming: (\d+) of (\d+) tiles already done", rerun.stderr).groups())
    assert 20 <= done < total == 16 * 20
    np.testing.assert_array_equal(zarr.open_array(output)[:], zarr.open_array(tmp_path / "reference.zarr")[:])
    assert not ledger.exists() and sorted(p.name for p in tmp_path.glob(".probs*")) == []


def test_killed_predict_resumes_with_the_same_command(tiny_unet, tmp_path, rng):
    save_model(
        tiny_unet(depth=2), tmp_path / "model", {"normalization": {"method": "percentile", "percentiles": [1, 99]}}
    )
    tifffile.imwrite(tmp_path / "image.tif", rng.integers(0, 60000, (512, 640), dtype=np.uint16))

    def predict(output):
        return [sys.executable, "-m", "unetseg", "predict", "--model", str(tmp_path / "model"), "--input",
                str(tmp_path / "image.tif"), "--output", str(output), "--tile", "32", "--threads", "1",
                "--probabilities", str(output.with_suffix(".ome.zarr"))]  # fmt: skip

    subprocess.run(predict(tmp_path / "reference.tif"), check=True, capture_output=True)
    output = tmp_path / "mask.tif"
    ledger = tmp_path / ".mask.tif.partial" / "probabilities.zarr.tiles"
    kill_after_tiles(predict(output), ledger, 20)
    assert not output.exists()

    rerun = subprocess.run(predict(output), check=True, capture_output=True, text=True)
    done, total = map(int, re.search(r"resuming: (\d+) of (\d+) tiles already done", rerun.stderr).groups())
    assert 20 <= done < total == 16 * 20
    np.testing.assert_array_equal(tifffile.imread(output), tifffile.imread(tmp_path / "reference.tif"))
    reference = zarr.open_group(tmp_path / "reference.ome.zarr")
    resumed = zarr.open_group(tmp_path / "mask.ome.zarr")
    level = sorted(name for name, _ in reference.arrays())[0]
    np.testing.assert_array_equal(resumed[level][:], reference[level][:])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # scratch removed
