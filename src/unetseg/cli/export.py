"""``unetseg export``: a trained model as a bioimage.io package for Fiji, ilastik and QuPath."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="trained model directory (results/<dataset>/model)")
    p.add_argument("--output", required=True, help="bioimage.io package to write: NAME.zip")
    p.add_argument("--sample-image", default=None,
                   help="a real image (e.g. a validation image, .tif or .zarr) for the package's test input and "
                        "output; default: a synthetic nuclei image, which the package's README says")  # fmt: skip
    p.add_argument("--axes", default=None, help="axis order of --sample-image if not in its metadata, e.g. CYX")
    p.add_argument("--name", default=None, help="name of the package (default: 'unetseg U-Net <dataset>')")
    p.add_argument("--author", action="append", default=None, dest="authors",
                   help="a person who trained the model (repeatable); bioimage.io asks for authors")  # fmt: skip
    p.add_argument("--tag", action="append", default=None, dest="tags",
                   help="extra bioimage.io tag, e.g. nuclei, fluorescence-light-microscopy (repeatable)")  # fmt: skip
    p.add_argument("--software-url", default=None,
                   help="URL to cite unetseg by (default: the project URL of unetseg's package metadata)")  # fmt: skip
    p.add_argument("--onnx", action="store_true",
                   help="add ONNX weights, checked with onnxruntime (needs onnx, onnxscript, onnxruntime)")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    from unetseg.export.bioimageio import export_bioimageio

    output = export_bioimageio(
        args.model, args.output, sample_image=args.sample_image, axes=args.axes, name=args.name,
        authors=args.authors, software_url=args.software_url, tags=args.tags, onnx=args.onnx,
    )  # fmt: skip
    print(
        f"wrote {output} (bioimage.io model, spec 0.5); check it as bioimage.io does with `bioimageio test {output}`",
        file=sys.stderr,
    )
