"""``unetseg tile``: cut training and validation patches into a Zarr store."""

from __future__ import annotations

import argparse
import sys

from unetseg.cli.options import int_or_auto, json_value
from unetseg.data.patches import write_patches
from unetseg.errors import InputError
from unetseg.nn.model import UNet
from unetseg.plan.rules import resolve
from unetseg.plan.run import read_plan


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", nargs="+", required=True)
    p.add_argument("--val", nargs="+", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--patch-size", type=int_or_auto, default=256, help="pixels, or auto (from --plan)")
    p.add_argument("--model-settings", type=json_value, default={},
                   help="JSON: the config's model section (valid padding places patches with context)")  # fmt: skip
    p.add_argument("--weight-map", nargs="?", const="on", default="off", choices=("on", "off", "auto"),
                   help="store the U-Net paper's loss weight map (auto: as --plan says)")  # fmt: skip
    p.add_argument("--plan", default=None, help="plan.json of unetseg plan: the values of auto settings")
    p.add_argument("--w0", type=float, default=10.0, help="weight map: height of the border term")
    p.add_argument("--sigma", type=float, default=5.0, help="weight map: width of the border term (pixels)")
    p.add_argument("--weight-objects", choices=("foreground", "background"), default="foreground",
                   help="objects whose borders are weighted: the mask's (nuclei) or the regions it encloses (cells between membranes)")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    planned = read_plan(args.plan)["settings"] if args.plan else None
    enabled = {"on": True, "off": False, "auto": "auto"}[args.weight_map]
    try:
        tile = resolve("tile", {"patch_size": args.patch_size, "weight_map": {"enabled": enabled}}, planned)
        # Tiling needs the depth (and padding) only; the width is planned after it.
        shape = {k: v for k, v in args.model_settings.items() if k in ("depth", "padding")}
        model = resolve("model", shape, planned)
    except ValueError as err:
        raise InputError(str(err)) from None
    weight_map = None
    if tile["weight_map"]["enabled"]:
        weight_map = {"w0": args.w0, "sigma": args.sigma, "objects": args.weight_objects}
    context = 0
    if model.get("padding") == "valid":  # margin of the network (independent of its width)
        context = UNet(depth=model.get("depth", 4), base_channels=1, padding="valid").margin
    splits = {"train": args.train, "val": args.val}
    counts = write_patches(args.output, splits, patch_size=tile["patch_size"], weight_map=weight_map, context=context)
    print(f"patches: {counts}", file=sys.stderr)
