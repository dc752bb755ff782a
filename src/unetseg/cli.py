"""The ``unetseg`` command: one subcommand per workflow step, plus ``predict``.

Every Snakemake rule runs one of these subcommands; ``unetseg predict`` segments a single
image of any size with a trained model, outside the workflow.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

from .errors import InputError

__all__ = ["main"]


def _json(text: str):
    return json.loads(text)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _overlap(text: str) -> float:
    value = float(text)
    if not 0 <= value < 0.5:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 0.5, not {text}")
    return value


def _foreground(text: str) -> str | list[int]:
    """``nonzero`` or a JSON list of mask values, e.g. ``[0]``."""
    return text if text == "nonzero" else json.loads(text)


def cmd_demo_data(args: argparse.Namespace) -> None:
    from .demo import write_demo_dataset

    sheet = write_demo_dataset(
        args.output, shape=(args.size, args.size), n_train=args.n_train, n_val=args.n_val,
        n_test=args.n_test, n_predict=args.n_predict, seed=args.seed,
    )  # fmt: skip
    print(f"wrote demo dataset, sample sheet {sheet}", file=sys.stderr)


def cmd_preprocess(args: argparse.Namespace) -> None:
    from .preprocess import preprocess_sample

    attrs = preprocess_sample(
        args.sample, args.image, args.output, mask_path=args.mask or None, foreground=args.foreground,
        percentiles=tuple(args.percentiles), axes=args.axes,
    )  # fmt: skip
    print(f"{args.sample}: axes {attrs['source_axes']}, spatial shape {attrs['spatial_shape']}", file=sys.stderr)


def cmd_tile(args: argparse.Namespace) -> None:
    from .patches import write_patches

    weight_map = None
    if args.weight_map:
        weight_map = {"w0": args.w0, "sigma": args.sigma, "objects": args.weight_objects}
    splits = {"train": args.train, "val": args.val}
    context = 0
    if args.model_settings.get("padding") == "valid":  # margin of the network (independent of its width)
        from .model import UNet

        context = UNet(depth=args.model_settings.get("depth", 4), base_channels=1, padding="valid").margin
    counts = write_patches(args.output, splits, patch_size=args.patch_size, weight_map=weight_map, context=context)
    print(f"patches: {counts}", file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> None:
    from .provenance import collect_provenance
    from .training import train_model

    card = dict(args.card)
    card["provenance"] = collect_provenance(
        inputs=card.get("data", {}).get("files", {}),
        sample_sheet=card.get("config", {}).get("samples"),
        workflow_dir=args.workflow_dir,
    )
    summary = train_model(
        args.patches, args.output, model_settings=args.model_settings, train_settings=args.train_settings,
        card=card, checkpoint=args.checkpoint, val_images=args.val_images, border=args.border,
    )  # fmt: skip
    print(f"training done: {json.dumps(summary)}", file=sys.stderr)


def _predictor(args: argparse.Namespace):
    from .inference import TiledPredictor
    from .modelcard import load_model

    model = load_model(args.model)
    return TiledPredictor(
        model, tile=args.tile, batch_size=args.batch_size, border=args.border, device=args.device, tta=args.tta,
        blend=args.blend, overlap=args.overlap, amp=args.amp,
    )  # fmt: skip


def cmd_infer(args: argparse.Namespace) -> None:
    import shutil

    from .inference import dask_client
    from .io import ImageSource
    from .preprocess import open_preprocessed

    group, attrs = open_preprocessed(args.input)
    source = ImageSource(group["image"], "ZCYX")
    predictor = _predictor(args)
    _check_channels(predictor, source.shape[1], args.input)
    output = Path(args.output)
    # Work in a fixed place beside the output, so that a rerun after a crash finds the
    # tiles already done; move into place only when complete.
    partial = output.with_name(f".{output.name}.partial")
    fingerprint = _inference_fingerprint(args, attrs)
    out, ledger = predictor.resumable_output(
        partial, (source.shape[0], *source.shape[2:]), fingerprint=fingerprint,
        attributes={"sample": attrs["sample"], "spatial_axes": attrs["spatial_axes"]},
    )  # fmt: skip
    with dask_client(args.dask_scheduler, workers=args.threads or 2) as client:
        predictor.predict(source, out, threads=args.threads, ledger=ledger, client=client, skip_constant=args.skip_empty)
    if output.exists():
        shutil.rmtree(output)
    partial.rename(output)
    shutil.rmtree(ledger.directory)


def _inference_fingerprint(args: argparse.Namespace, attrs: dict) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name in ("weights.pt", "card.json"):
        digest.update((Path(args.model) / name).read_bytes())
    settings = {
        "tile": args.tile, "border": args.border, "tta": args.tta, "blend": args.blend, "overlap": args.overlap,
        "skip_empty": args.skip_empty, "amp": args.amp, "input": attrs,
    }  # fmt: skip
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def _check_channels(predictor, channels: int, path) -> None:
    expected = predictor.model.settings["in_channels"]
    if channels != expected:
        raise InputError(
            f"{path}: image has {channels} channel(s) but the model was trained on {expected}. If the file is "
            "a stack of planes rather than channels, give its axis order (--axes ZYX for unetseg predict, "
            "data.axes in the workflow config)."
        )


def cmd_stitch(args: argparse.Namespace) -> None:
    import zarr

    from .modelcard import read_card
    from .stitching import write_mask

    probs = zarr.open_array(args.probabilities, mode="r")
    threshold = read_card(args.model).get("threshold", 0.5)
    write_mask(probs, args.output, threshold=threshold, spatial_axes=probs.attrs["spatial_axes"])


def _check_predict_paths(args: argparse.Namespace) -> None:
    """Refuse, before any work, output names that cannot be written or that collide."""
    from .io import is_tiff_path, is_zarr_path

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
                raise InputError(f"{path}: given to both {seen[resolved]} and {option}; outputs need paths of their own.")
            seen[resolved] = option


def cmd_predict(args: argparse.Namespace) -> None:
    import shutil

    from .inference import NormalizedSource
    from .io import open_image
    from .modelcard import read_card
    from .preprocess import percentile_stats
    from .stitching import write_mask

    _check_predict_paths(args)
    card = read_card(args.model)
    predictor = _predictor(args)
    output = Path(args.output)
    with open_image(args.input, axes=args.axes) as source, _tissue_mask(args.tissue_mask, source) as tissue:
        _check_channels(predictor, source.shape[1], args.input)
        stats = percentile_stats(source, *card["normalization"]["percentiles"])
        spatial_zyx = (source.shape[0], *source.shape[2:])
        _warn_small_tile(predictor)
        output.parent.mkdir(parents=True, exist_ok=True)
        # Work in a fixed place beside the output, so that a rerun of the same command after
        # a crash finds the tiles already done; removed once every output is written.
        partial = output.with_name(f".{output.name}.partial")
        identity = {"input": _file_identity(args.input), "tissue": _file_identity(args.tissue_mask), "stats": stats}
        probs, ledger = predictor.resumable_output(
            partial / "probabilities.zarr", spatial_zyx, fingerprint=_inference_fingerprint(args, identity)
        )
        try:
            predictor.predict(
                NormalizedSource(source, stats), probs, threads=args.threads, ledger=ledger,
                skip_constant=args.skip_empty, tissue=tissue,
            )  # fmt: skip
            threshold = card.get("threshold", 0.5)
            shape = write_mask(probs, output, threshold=threshold, spatial_axes=source.spatial_axes)
            print(f"wrote {output} ({'x'.join(map(str, shape))}, threshold {threshold:.3g} from the model card)",
                  file=sys.stderr)  # fmt: skip
            if args.instances or args.probabilities:
                _predict_extras(args, probs, threshold, source.spatial_axes, partial)
        except InputError:
            shutil.rmtree(partial, ignore_errors=True)  # a bad input: nothing to resume
            raise
        shutil.rmtree(partial)


def _warn_small_tile(predictor) -> None:
    """Say so when halos cost more than the tiles themselves (e.g. --tile 8)."""
    cost = ((predictor.tile + 2 * predictor.halo) / predictor.tile) ** 2
    if cost > 4:
        print(
            f"note: tile {predictor.tile} with a halo of {predictor.halo} pixels on each side computes "
            f"{cost:.0f}x the pixels it keeps; a --tile of 512 or more is much faster.",
            file=sys.stderr,
        )


def _file_identity(path: str | None) -> list | None:
    """Path, size and modification time: enough to tell a changed input from the same one."""
    if path is None:
        return None
    stat = Path(path).stat()
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def _predict_extras(args: argparse.Namespace, probs, threshold: float, spatial_axes: str, scratch: Path) -> None:
    """Instance labels and the OME-Zarr pyramid, from the probabilities; the mask they
    start from goes to ``scratch`` as Zarr."""
    import zarr

    from .components import label_components
    from .io import open_image
    from .ngff import write_ome_zarr
    from .stitching import write_mask

    write_mask(probs, scratch / "mask.zarr", threshold=threshold, spatial_axes=spatial_axes)
    mask = zarr.open_array(scratch / "mask.zarr", mode="r")
    if args.instances:
        count = label_components(mask, args.instances, spatial_axes=spatial_axes)
        print(f"wrote {args.instances} ({count} objects)", file=sys.stderr)
    if args.probabilities:
        # The instances just written are read back for the labels, not labelled again.
        with open_image(args.instances) if args.instances else nullcontext() as instances:
            write_ome_zarr(
                args.probabilities, probabilities=probs, mask=mask, spatial_axes=spatial_axes,
                instances=None if instances is None else instances.array, dtype=args.probabilities_dtype,
            )  # fmt: skip
        print(f"wrote {args.probabilities} (OME-Zarr: probabilities, labels/mask"
              f"{', labels/instances' if args.instances else ''})", file=sys.stderr)  # fmt: skip


@contextmanager
def _tissue_mask(path: str | None, source):
    """The ``--tissue-mask`` image as a ``(Z, 1, Y, X)`` source, checked against ``source``."""
    if path is None:
        yield None
        return
    from .io import open_image

    with open_image(path) as tissue:
        if (tissue.shape[0], *tissue.shape[2:]) != (source.shape[0], *source.shape[2:]) or tissue.shape[1] != 1:
            raise InputError(
                f"{path}: tissue mask of shape {tissue.spatial_shape} (channels {tissue.shape[1]}) does not match "
                f"the image's spatial shape {source.spatial_shape}; give a one-channel mask of the same size."
            )
        yield tissue


def cmd_instances(args: argparse.Namespace) -> None:
    from .components import label_components
    from .io import open_image

    with open_image(args.mask) as mask:
        count = label_components(mask.array, args.output, spatial_axes=mask.spatial_axes)
    print(f"wrote {args.output} ({count} objects)", file=sys.stderr)


def cmd_ome_zarr(args: argparse.Namespace) -> None:
    import zarr

    from .io import open_image
    from .ngff import write_ome_zarr

    probs = zarr.open_array(args.probabilities, mode="r")
    with open_image(args.mask) as mask, open_image(args.instances) if args.instances else nullcontext() as instances:
        write_ome_zarr(
            args.output, probabilities=probs, mask=mask.array, instances=None if instances is None else instances.array,
            spatial_axes=mask.spatial_axes, dtype=args.dtype,
        )  # fmt: skip
    print(f"wrote {args.output}", file=sys.stderr)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluation import evaluate, write_evaluation

    import time

    started = time.perf_counter()
    summary = evaluate(args.samples, args.truth, args.prediction, foreground=args.foreground)
    summary["provenance"] = _evaluation_provenance(args)
    summary["provenance"]["evaluation_seconds"] = round(time.perf_counter() - started, 3)
    write_evaluation(summary, args.json, args.csv, metrics_csv=args.metrics_table)
    if args.metrics_page or args.distributions or args.instances or args.gallery:
        _evaluation_figures(args, summary)
    print(f"mean Dice {summary['mean_dice']}, mean IoU {summary['mean_iou']}", file=sys.stderr)


def _evaluation_provenance(args: argparse.Namespace) -> dict:
    """Checksums of the test inputs and of the model, commit and versions."""
    from .preprocess import open_preprocessed
    from .provenance import collect_provenance, sha256_path

    inputs = {}
    for truth in args.truth:
        _, attrs = open_preprocessed(truth)
        inputs[attrs["sample"]] = [attrs["image"], attrs["mask"] or ""]
    record = collect_provenance(inputs=inputs, sample_sheet=args.sample_sheet, workflow_dir=args.workflow_dir)
    if args.model:
        from .modelcard import read_card

        card = read_card(args.model)
        record["model"] = {"path": args.model, "weights_sha256": sha256_path(Path(args.model) / "weights.pt")}
        # How the model was made: device, seed, timings and the whole config of the run.
        record["training"] = card.get("training", {})
        record["seed"] = card.get("train_config", {}).get("seed")
        record["config"] = card.get("config")
    return record


def _evaluation_figures(args: argparse.Namespace, summary: dict) -> None:
    from . import figures
    from .report_pages import metrics_page

    if args.metrics_page:
        metrics_page(summary, args.metrics_page)
    if args.distributions:
        figures.metric_distributions_figure(args.csv, args.distributions)
    if args.instances:
        figures.instance_curve_figure(summary, args.instances)
    if args.gallery:
        rows = [(r["sample"], r["dice"], t, p) for r, t, p in zip(summary["per_image"], args.truth, args.prediction)]
        figures.gallery_figure(rows, args.gallery)


def cmd_figure(args: argparse.Namespace) -> None:
    from . import figures
    from .report_pages import data_page, model_card_page

    needed = {"overlay": ("preprocessed", "prediction"), "training": ("history",), "data": ("preprocessed", "splits"),
              "card": ("model",)}[args.kind]  # fmt: skip
    missing = [f"--{name}" for name in needed if not getattr(args, name)]
    if missing:
        raise InputError(f"figure {args.kind} needs {' and '.join(missing)}")
    if args.kind == "training":
        figures.training_curve_figure(args.history, args.output)
    elif args.kind == "data":
        data_page(args.preprocessed, args.splits, args.output)
    elif args.kind == "card":
        model_card_page(args.model, args.output)
    else:
        figures.overlay_figure(args.preprocessed[0], args.prediction, args.output)


def _inference_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="trained model directory (results/<dataset>/model)")
    parser.add_argument("--tile", type=_positive_int, default=1024,
                        help="tile (write region) size in pixels, rounded up to a multiple of 2^depth")  # fmt: skip
    parser.add_argument("--batch-size", type=_positive_int, default=1, help="tiles per forward pass (raise on a GPU)")
    parser.add_argument("--border", choices=("mirror", "zero"), default="mirror", help="padding beyond image borders")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument("--device", default="auto", help="cuda, cpu, mps or auto")
    parser.add_argument("--tta", action="store_true", help="average over flipped copies (4x slower)")
    parser.add_argument("--amp", action="store_true", help="mixed precision on CUDA (faster, not bit-equal); ignored on a CPU")
    parser.add_argument("--blend", choices=("none", "gaussian"), default="none",
                        help="none: exact overlap-tile (halo = receptive field); gaussian: weighted "
                             "average of overlapping tiles, as MONAI and nnU-Net")  # fmt: skip
    parser.add_argument("--overlap", type=_overlap, default=0.25,
                        help="with --blend gaussian: fraction of a tile shared with each neighbour, below 0.5")  # fmt: skip
    parser.add_argument("--skip-empty", action="store_true",
                        help="no network pass on tiles whose input is constant (background probabilities)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unetseg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="segment one image of any size with a trained model",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    _inference_options(p)
    p.add_argument("--input", required=True, help="image: .tif/.tiff or .zarr")
    p.add_argument("--output", required=True, help="mask to write: .tif/.tiff or .zarr")
    p.add_argument("--axes", default=None, help="axis order of the input if not in its metadata, e.g. CYX")
    p.add_argument("--probabilities", default=None,
                   help="also write the probabilities, with the mask (and instances) as labels, as an "
                        "OME-Zarr pyramid (e.g. out.ome.zarr) that napari and other NGFF viewers open")  # fmt: skip
    p.add_argument("--probabilities-dtype", choices=("float16", "uint8", "float32"), default="float16",
                   help="storage of --probabilities (uint8: probability x 255)")  # fmt: skip
    p.add_argument("--instances", default=None,
                   help="also write instance labels (connected components, consistent across chunks): .tif or .zarr")  # fmt: skip
    p.add_argument("--tissue-mask", default=None,
                   help="mask image of the same size (nonzero = tissue); tiles outside it are not segmented")  # fmt: skip
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo-data", help="write the synthetic demo dataset and its sample sheet")
    p.add_argument("--output", required=True)
    p.add_argument("--size", type=int, default=256)
    for split, n in (("train", 8), ("val", 2), ("test", 4), ("predict", 1)):
        p.add_argument(f"--n-{split}", type=int, default=n)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("preprocess", help="check, normalise and store one sample as Zarr")
    p.add_argument("--sample", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--mask", default="")
    p.add_argument("--output", required=True)
    p.add_argument("--foreground", type=_foreground, default="nonzero", help='"nonzero" or a JSON list, e.g. [0]')
    p.add_argument("--percentiles", type=float, nargs=2, default=(1.0, 99.8))
    p.add_argument("--axes", default=None)
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("tile", help="cut training and validation patches into a Zarr store")
    p.add_argument("--train", nargs="+", required=True)
    p.add_argument("--val", nargs="+", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--patch-size", type=int, default=256)
    p.add_argument("--model-settings", type=_json, default={},
                   help="JSON: the config's model section (valid padding places patches with context)")  # fmt: skip
    p.add_argument("--weight-map", action="store_true", help="store the U-Net paper's loss weight map")
    p.add_argument("--w0", type=float, default=10.0, help="weight map: height of the border term")
    p.add_argument("--sigma", type=float, default=5.0, help="weight map: width of the border term (pixels)")
    p.add_argument("--weight-objects", choices=("foreground", "background"), default="foreground",
                   help="objects whose borders are weighted: the mask's (nuclei) or the regions it encloses (cells between membranes)")  # fmt: skip
    p.set_defaults(func=cmd_tile)

    p = sub.add_parser("train", help="train a U-Net on a patch store")
    p.add_argument("--patches", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--model-settings", type=_json, default={}, help="JSON: the config's model section")
    p.add_argument("--train-settings", type=_json, default={}, help="JSON: the config's train section")
    p.add_argument("--card", type=_json, default={}, help="JSON: extra model-card entries")
    p.add_argument("--checkpoint", default=None, help="training state file: resumed from if present")
    p.add_argument("--workflow-dir", default=None, help="directory of the workflow, for its git commit")
    p.add_argument("--val-images", nargs="*", default=None,
                   help="preprocessed validation samples: validate on whole images and tune the threshold")  # fmt: skip
    p.add_argument("--border", choices=("mirror", "zero"), default="mirror", help="border padding of that validation")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("infer", help="tiled inference of a preprocessed sample into a probability Zarr")
    _inference_options(p)
    p.add_argument(
        "--dask-scheduler", default=None,
        help="'threads' (default), 'local' (a local cluster of processes) or a dask.distributed scheduler address",
    )  # fmt: skip
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("stitch", help="final mask from a probability map")
    p.add_argument("--model", required=True)
    p.add_argument("--probabilities", required=True)
    p.add_argument("--output", required=True)
    p.set_defaults(func=cmd_stitch)

    p = sub.add_parser("instances", help="instance labels (connected components) of a mask, out of core")
    p.add_argument("--mask", required=True, help="mask: .tif/.tiff or .zarr (nonzero = foreground)")
    p.add_argument("--output", required=True, help="labels to write: .tif/.tiff or .zarr")
    p.set_defaults(func=cmd_instances)

    p = sub.add_parser("ome-zarr", help="probabilities and labels as an OME-Zarr pyramid")
    p.add_argument("--probabilities", required=True, help="(Z, K, Y, X) probability Zarr written by infer")
    p.add_argument("--mask", required=True, help="the mask of those probabilities")
    p.add_argument("--instances", default=None, help="instance labels of the mask")
    p.add_argument("--dtype", choices=("uint8", "float16", "float32"), default="uint8")
    p.add_argument("--output", required=True, help="OME-Zarr to write, e.g. sample.ome.zarr")
    p.set_defaults(func=cmd_ome_zarr)

    p = sub.add_parser("evaluate", help="Dice, IoU and more over a split")
    p.add_argument("--samples", nargs="+", required=True)
    p.add_argument("--truth", nargs="+", required=True, help="preprocessed samples, same order")
    p.add_argument("--prediction", nargs="+", required=True, help="mask files, same order")
    p.add_argument("--foreground", type=_foreground, default="nonzero",
                   help='labels.foreground the truth was preprocessed with: "nonzero" or a JSON list')  # fmt: skip
    p.add_argument("--json", required=True, help="summary.json to write")
    p.add_argument("--csv", required=True, help="per-image CSV to write")
    p.add_argument("--metrics-table", help="CSV to write: statistics of every score over the split")
    p.add_argument("--metrics-page", help="HTML page to write: the statistics and per-image tables")
    p.add_argument("--distributions", help="PNG to write: distributions of the per-image scores")
    p.add_argument("--instances", help="PNG to write: object precision/recall against the IoU threshold")
    p.add_argument("--gallery", help="PNG to write: error maps of the worst images by Dice")
    p.add_argument("--model", help="model directory that made the predictions, for provenance")
    p.add_argument("--sample-sheet", help="sample sheet, for provenance")
    p.add_argument("--workflow-dir", help="directory of the workflow, for its git commit")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("figure", help="report figures and pages")
    p.add_argument("kind", choices=("overlay", "training", "data", "card"),
                   help="overlay: contours and error map of one sample; training: training curve; "
                        "data: HTML table of the samples; card: HTML page of a model card")  # fmt: skip
    p.add_argument("--output", required=True)
    p.add_argument("--preprocessed", nargs="+", help="preprocessed sample(s): one for overlay, all for data")
    p.add_argument("--prediction", help="mask file (overlay)")
    p.add_argument("--history", help="history.csv of a model (training)")
    p.add_argument("--splits", nargs="+", help="split of each preprocessed sample (data)")
    p.add_argument("--model", help="model directory (card)")
    p.set_defaults(func=cmd_figure)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except InputError as err:
        print(f"unetseg {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unetseg {args.command}: interrupted; finished tiles are kept: rerun the same command to resume.",
              file=sys.stderr)  # fmt: skip
        return 130
    except OSError as err:  # disk full, permission denied, ...: say which file and why
        where = f" {err.filename}:" if err.filename else ""
        print(
            f"unetseg {args.command}: error:{where} {err.strerror or err}. Outputs written before are "
            "intact and nothing partial was left under a final name; free space or fix permissions, "
            "then rerun.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
