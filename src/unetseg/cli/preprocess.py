"""``unetseg preprocess``: check, normalise and store one sample as Zarr."""

from __future__ import annotations

import argparse
import sys

from unetseg.cli.options import foreground, json_value
from unetseg.data.masks import check_classes
from unetseg.data.preprocess import preprocess_sample
from unetseg.data.targets import DEFAULT_SEPARATION, SEPARATIONS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sample", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--mask", default="")
    p.add_argument("--output", required=True)
    p.add_argument("--foreground", type=foreground, default="nonzero", help='"nonzero" or a JSON list, e.g. [0]')
    p.add_argument("--classes", type=json_value, default={},
                   help='labels.classes as JSON, e.g. {"cell": [1], "nucleus": [2]}; {}: binary')  # fmt: skip
    p.add_argument("--percentiles", type=float, nargs=2, default=(1.0, 99.8))
    p.add_argument("--axes", default=None)
    p.add_argument(
        "--no-separate",
        action="store_true",
        help="learn the plain foreground, touching objects not kept apart (labels.separate_touching: false)",
    )
    p.add_argument("--separation", choices=SEPARATIONS, default=DEFAULT_SEPARATION,
                   help="how touching objects are kept apart in the target: a background line, or a contact class")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    attrs = preprocess_sample(
        args.sample, args.image, args.output, mask_path=args.mask or None, foreground=args.foreground,
        percentiles=tuple(args.percentiles), axes=args.axes, separate=not args.no_separate and args.separation,
        classes=check_classes(args.classes, key="--classes") if args.classes else None,
    )  # fmt: skip
    print(f"{args.sample}: axes {attrs['source_axes']}, spatial shape {attrs['spatial_shape']}", file=sys.stderr)
