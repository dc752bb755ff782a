"""``unetseg ome-zarr``: probabilities and labels as an OME-Zarr pyramid."""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext

import zarr

from unetseg.io.images import open_image
from unetseg.io.ngff import write_ome_zarr


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--probabilities", required=True, help="(Z, K, Y, X) probability Zarr written by infer")
    p.add_argument("--mask", required=True, help="the mask of those probabilities")
    p.add_argument("--instances", default=None, help="instance labels of the mask")
    p.add_argument("--dtype", choices=("uint8", "float16", "float32"), default="uint8")
    p.add_argument("--output", required=True, help="OME-Zarr to write, e.g. sample.ome.zarr")


def run(args: argparse.Namespace) -> None:
    probs = zarr.open_array(args.probabilities, mode="r")
    with open_image(args.mask) as mask, open_image(args.instances) if args.instances else nullcontext() as instances:
        write_ome_zarr(
            args.output, probabilities=probs, mask=mask.array, instances=None if instances is None else instances.array,
            spatial_axes=mask.spatial_axes, dtype=args.dtype,
        )  # fmt: skip
    print(f"wrote {args.output}", file=sys.stderr)
