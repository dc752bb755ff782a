"""Seconds of one validation of a training run, by part and precision, side by side.

Times, on a finished ISBI run's preprocessed validation slices (22-24) and patch store, a
fresh depth-4 U-Net of ``--channels`` base channels: the loss pass over the validation
patches (training precision) and the whole-image validation Dice in float32 and with
``amp`` (bfloat16 on a CPU that has it), each the fastest of ``--repeats``.

    python benchmarks/isbi2012/validation_time.py results/isbi2012_plan --batch 8
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from unetseg.nn.model import UNet
from unetseg.training.loading import PatchesInMemory
from unetseg.training.trainer import TrainConfig, Trainer
from unetseg.training.validation import WholeImageValidator


def fastest(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results/<dataset> of a finished ISBI run")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)  # as unetseg train on the CPU
    slices = [args.results / "preprocessed" / f"slice_{i}.zarr" for i in (22, 23, 24)]
    store = args.results / "tiles" / "patches.zarr"
    model = UNet(in_channels=1, out_channels=1, depth=4, base_channels=args.channels)
    validator = WholeImageValidator(slices, border="mirror")
    trainer = Trainer(model, PatchesInMemory(store, "train"), PatchesInMemory(store, "val"),
                      TrainConfig(batch_size=args.batch, epochs=1, max_minutes=1), validator=validator)  # fmt: skip
    with torch.inference_mode():
        patches = fastest(lambda: trainer._validate_patches(model), args.repeats)
        full = fastest(lambda: validator.score(model, device="cpu"), args.repeats)
        mixed = fastest(lambda: validator.score(model, device="cpu", amp=True), args.repeats)
    print(f"validation patches ({len(trainer.val_set)}, training precision): {patches:.2f} s")
    print(
        f"whole-image Dice, float32: {full:.2f} s; amp ({trainer.amp_dtype}): {mixed:.2f} s; ratio {mixed / full:.2f}"
    )


if __name__ == "__main__":
    main()
