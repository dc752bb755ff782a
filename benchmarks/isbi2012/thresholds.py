"""Membrane Dice and pixel error on the ISBI 2012 test slices against the probability threshold.

A diagnostic, not a tuning step: the workflow thresholds at the probability tuned on the
validation slices (the model card's ``threshold``). This script shows how far that choice is
from the best threshold for the test slices, i.e. whether a missed score is the threshold's
or the network's. It runs ``unetseg predict`` on slices 25-29 with float32 probabilities and
scores each threshold against the labels (0 = membrane = foreground).

Usage, from the repository root, with the project's environment active::

    python benchmarks/isbi2012/thresholds.py results/isbi2012_plan/model [--thresholds 0.3 0.4 0.5 0.6] [--tta] [--per-slice]

``--tta`` scores the average over the image and its flips (``unetseg predict --tta``).
``--per-slice`` adds, for each slice, the threshold among those given that is best for that
slice alone (an oracle no run can use): what any choice of threshold could buy at most.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile
import zarr

from unetseg.evaluation.metrics import dice, pixel_error

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "isbi2012"
TEST = range(25, 30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a trained model directory (weights.pt + card.json)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7])
    parser.add_argument("--tta", action="store_true", help="average over the image and its flips")
    parser.add_argument("--per-slice", action="store_true", help="also the best threshold of each slice (an oracle)")
    args = parser.parse_args()
    card = json.loads((Path(args.model) / "card.json").read_text())
    missing = [f"{kind}/slice_{i}.tif" for i in TEST for kind in ("images", "labels")
               if not (DATA / kind / f"slice_{i}.tif").is_file()]  # fmt: skip
    if missing:
        print(f"thresholds.py: {len(missing)} test files missing under {DATA}, e.g. {missing[0]}", file=sys.stderr)
        return 2
    probabilities, truths = [], []
    with tempfile.TemporaryDirectory() as work:
        for i in TEST:
            out = Path(work) / f"slice_{i}"
            subprocess.run(
                ["unetseg", "predict", "--model", args.model, "--input", str(DATA / "images" / f"slice_{i}.tif"),
                 "--output", f"{out}_mask.tif", "--probabilities", f"{out}.ome.zarr",
                 "--probabilities-dtype", "float32", *(["--tta"] if args.tta else [])],
                check=True, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            probabilities.append(np.asarray(zarr.open_array(f"{out}.ome.zarr/s0", mode="r")[:]).squeeze())
            truths.append(tifffile.imread(DATA / "labels" / f"slice_{i}.tif") == 0)
    tuned = card.get("threshold")
    flips = ", averaged over flips" if args.tta else ""
    print(f"model {args.model}{flips}: threshold tuned on the validation slices {tuned}\n")
    print("| threshold | membrane Dice (mean of slices 25-29) | pixel error |")
    print("| --- | --- | --- |")
    for threshold in sorted({*args.thresholds, *([tuned] if tuned is not None else [])}):
        masks = [probability > threshold for probability in probabilities]
        dices = [dice(truth, mask) for truth, mask in zip(truths, masks)]
        errors = [pixel_error(truth, mask) for truth, mask in zip(truths, masks)]
        mark = " (tuned)" if threshold == tuned else ""
        print(f"| {threshold:.3f}{mark} | {np.mean(dices):.4f} | {np.mean(errors):.4f} |")
    if args.per_slice:
        grid = np.array(sorted({*args.thresholds, *([tuned] if tuned is not None else [])}))
        print("\n| slice | best threshold for it | its membrane Dice | at the tuned threshold |")
        print("| --- | --- | --- | --- |")
        best = []
        for i, truth, probability in zip(TEST, truths, probabilities):
            dices = np.array([dice(truth, probability > threshold) for threshold in grid])
            best.append(dices.max())
            at_tuned = f"{dices[grid == tuned][0]:.4f}" if tuned is not None else "-"
            print(f"| slice_{i} | {grid[dices.argmax()]:.3f} | {dices.max():.4f} | {at_tuned} |")
        print(f"\nmean membrane Dice with each slice at its own best threshold: {np.mean(best):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
