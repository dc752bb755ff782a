"""``unetseg segment``: a batch of images through preprocessing, inference, mask, instances,
measurements and overlays in one process (the workflow runs one job per batch)."""

from __future__ import annotations

import argparse
import sys

from unetseg.batch.manifest import write_manifest
from unetseg.batch.segment import BatchSample, BatchSegmenter, SegmentSettings
from unetseg.cli.options import add_inference_options, foreground, json_value
from unetseg.cli.predict import inference_options
from unetseg.export.unpack import is_package, open_exported


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_inference_options(p)
    p.add_argument("--samples", type=json_value, required=True,
                   help='JSON list of {"sample", "image", "mask", "split"} objects to segment')  # fmt: skip
    p.add_argument("--results", required=True, help="results/<dataset>: outputs go to its masks/, instances/, ...")
    p.add_argument("--manifest", required=True, help="TSV to write: one row per sample with its status")
    p.add_argument("--overlays", default=None, help="directory for the report's overlay PNGs")
    p.add_argument("--foreground", type=foreground, default="nonzero", help="labels.foreground of test masks")
    p.add_argument("--axes", default=None, help="axis order of the images if not in their metadata")
    p.add_argument("--pixel-size", type=float, nargs="+", default=None, help="µm per pixel (Y X or Z Y X)")
    p.add_argument("--no-instances", action="store_true", help="write no instance labels (and no measurements)")
    p.add_argument("--no-measure", action="store_true", help="write no per-object measurements")
    p.add_argument("--min-size", type=int, default=0, help="drop objects of fewer pixels from the instance labels")
    p.add_argument("--ome-zarr", action="store_true", help="also write results/<dataset>/ome-zarr/<sample>.ome.zarr")
    p.add_argument("--probabilities-dtype", choices=("uint8", "float16", "float32"), default="uint8")
    p.add_argument("--dask-scheduler", default=None,
                   help="'threads' (default), 'local' or a dask.distributed scheduler address")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    if is_package(args.model):  # a bioimage.io package exported by unetseg
        args.model = str(open_exported(args.model))
    settings = SegmentSettings(
        results=args.results, overlays=args.overlays, foreground=args.foreground,
        axes=None if args.axes in (None, "auto") else args.axes,
        pixel_size=tuple(args.pixel_size) if args.pixel_size else None, instances=not args.no_instances,
        measure=not (args.no_measure or args.no_instances), ome_zarr=args.ome_zarr,
        probabilities_dtype=args.probabilities_dtype, min_size=args.min_size,
    )  # fmt: skip
    samples = [BatchSample(**row) for row in args.samples]
    segmenter = BatchSegmenter(args.model, inference_options(args), settings, scheduler=args.dask_scheduler)
    rows = segmenter.run(samples)
    write_manifest(rows, args.manifest)
    failed = [row["sample"] for row in rows if row["status"] == "failed"]
    note = f"; failed: {', '.join(failed)} (reasons in the manifest and this log)" if failed else ""
    kept = f" ({segmenter.up_to_date} of them up to date, outputs kept)" if segmenter.up_to_date else ""
    print(f"segmented {len(rows) - len(failed)} of {len(rows)} sample(s){kept}{note}", file=sys.stderr)
