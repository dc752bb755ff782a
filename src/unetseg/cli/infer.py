"""``unetseg infer``: tiled inference of a preprocessed sample into a probability Zarr."""

from __future__ import annotations

import argparse

from unetseg.cli.options import add_inference_options
from unetseg.cli.predict import inference_options
from unetseg.export.unpack import is_package, open_exported
from unetseg.inference.run import infer_sample


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_inference_options(p)
    p.add_argument(
        "--dask-scheduler", default=None,
        help="'threads' (default), 'local' (a local cluster of processes) or a dask.distributed scheduler address",
    )  # fmt: skip
    p.add_argument("--input", required=True, help="preprocessed sample (.zarr)")
    p.add_argument("--output", required=True, help="probability Zarr to write")


def run(args: argparse.Namespace) -> None:
    if is_package(args.model):  # a bioimage.io package exported by unetseg
        args.model = str(open_exported(args.model))
    infer_sample(args.model, args.input, args.output, inference_options(args), scheduler=args.dask_scheduler)
