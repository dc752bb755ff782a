"""``unetseg instances``: instance labels (connected components) of a mask, out of core."""

from __future__ import annotations

import argparse
import sys

from unetseg.io.images import open_image
from unetseg.objects.components import label_components


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mask", required=True, help="mask: .tif/.tiff or .zarr (nonzero = foreground)")
    p.add_argument("--output", required=True, help="labels to write: .tif/.tiff or .zarr")
    p.add_argument("--min-size", type=int, default=0, help="drop objects of fewer pixels (inference.min_object_size)")
    p.add_argument("--gap", type=int, default=0,
                   help="close lines of up to 2*GAP pixels between touching objects; 2 for a model whose card has "
                        "separated_target, as the workflow does (default 0: the bare components)")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    with open_image(args.mask) as mask:
        count = label_components(mask.array, args.output, spatial_axes=mask.spatial_axes, min_size=args.min_size,
                                 gap=args.gap)  # fmt: skip
    print(f"wrote {args.output} ({count} objects)", file=sys.stderr)
