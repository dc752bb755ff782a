"""``unetseg tile``: cut training and validation patches into a Zarr store."""

from __future__ import annotations

import argparse
import sys

from unetseg.cli.options import json_value
from unetseg.data.patches import write_patches
from unetseg.nn.model import UNet


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", nargs="+", required=True)
    p.add_argument("--val", nargs="+", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--patch-size", type=int, default=256)
    p.add_argument("--model-settings", type=json_value, default={},
                   help="JSON: the config's model section (valid padding places patches with context)")  # fmt: skip
    p.add_argument("--weight-map", action="store_true", help="store the U-Net paper's loss weight map")
    p.add_argument("--w0", type=float, default=10.0, help="weight map: height of the border term")
    p.add_argument("--sigma", type=float, default=5.0, help="weight map: width of the border term (pixels)")
    p.add_argument("--weight-objects", choices=("foreground", "background"), default="foreground",
                   help="objects whose borders are weighted: the mask's (nuclei) or the regions it encloses (cells between membranes)")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    weight_map = None
    if args.weight_map:
        weight_map = {"w0": args.w0, "sigma": args.sigma, "objects": args.weight_objects}
    context = 0
    if args.model_settings.get("padding") == "valid":  # margin of the network (independent of its width)
        context = UNet(depth=args.model_settings.get("depth", 4), base_channels=1, padding="valid").margin
    splits = {"train": args.train, "val": args.val}
    counts = write_patches(args.output, splits, patch_size=args.patch_size, weight_map=weight_map, context=context)
    print(f"patches: {counts}", file=sys.stderr)
