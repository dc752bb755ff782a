"""``unetseg predict``: segment one image of any size with a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from unetseg.cli.options import add_inference_options
from unetseg.errors import InputError
from unetseg.export.unpack import is_package, open_exported
from unetseg.inference.run import InferenceOptions, PredictOutputs, predict_image
from unetseg.io.images import is_tiff_path, is_zarr_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_inference_options(p)
    p.add_argument("--input", required=True, help="image: .tif/.tiff or .zarr")
    p.add_argument("--output", required=True, help="mask to write: .tif/.tiff or .zarr")
    p.add_argument("--axes", default=None, help="axis order of the input if not in its metadata, e.g. CYX")
    p.add_argument("--probabilities", default=None,
                   help="also write the probabilities, with the mask (and instances) as labels, as an "
                        "OME-Zarr pyramid (e.g. out.ome.zarr) that napari and other NGFF viewers open")  # fmt: skip
    p.add_argument("--probabilities-dtype", choices=("float16", "uint8", "float32"), default="float16",
                   help="storage of --probabilities (default float16; uint8: probability x 255, what the workflow's "
                        "inference.probabilities_dtype writes by default)")  # fmt: skip
    p.add_argument("--instances", default=None,
                   help="also write instance labels (connected components, consistent across chunks): .tif or .zarr")  # fmt: skip
    p.add_argument("--tissue-mask", default=None,
                   help="mask image of the same size (nonzero = tissue); tiles outside it are not segmented")  # fmt: skip


def inference_options(args: argparse.Namespace) -> InferenceOptions:
    keys = ("tile", "batch_size", "border", "device", "tta", "amp", "blend", "overlap", "skip_empty", "threads")
    return InferenceOptions(**{key: getattr(args, key) for key in keys})


def check_paths(args: argparse.Namespace) -> None:
    """Refuse, before any work, output names that cannot be written or that collide."""
    checks = [("--output", args.output, "a mask: .tif, .tiff or .zarr"),
              ("--instances", args.instances, "instance labels: .tif, .tiff or .zarr")]  # fmt: skip
    for option, path, what in checks:
        if path and not (is_tiff_path(path) or is_zarr_path(path)):
            raise InputError(f"{path}: {option} must name {what}.")
    if args.probabilities and not is_zarr_path(args.probabilities):
        raise InputError(f"{args.probabilities}: --probabilities writes OME-Zarr; name it *.ome.zarr.")
    named = {"--input": args.input, "--tissue-mask": args.tissue_mask, "--output": args.output,
             "--instances": args.instances, "--probabilities": args.probabilities}  # fmt: skip
    seen: dict[Path, str] = {}
    for option, path in named.items():
        if path:
            resolved = Path(path).resolve()
            if resolved in seen:
                raise InputError(
                    f"{path}: given to both {seen[resolved]} and {option}; outputs need paths of their own."
                )
            seen[resolved] = option


def run(args: argparse.Namespace) -> None:
    if is_package(args.model):  # a bioimage.io package exported by unetseg
        args.model = str(open_exported(args.model))
    check_paths(args)
    outputs = PredictOutputs(args.output, args.instances, args.probabilities, args.probabilities_dtype)
    predict_image(
        args.model, args.input, outputs, inference_options(args), axes=args.axes, tissue_mask=args.tissue_mask
    )
