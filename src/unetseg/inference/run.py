"""Resumable inference of whole files: a preprocessed sample (workflow) or any image (predict).

Both work in a fixed place beside the output (``.{name}.partial``), keyed by a fingerprint of
the model, the options and the input, so that a rerun of the same command after a crash
finds the tiles already done; the result is moved into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import zarr

from unetseg.data.normalize import NormalizedSource, percentile_stats
from unetseg.data.sample import open_sample
from unetseg.data.targets import LINE_WIDTH
from unetseg.errors import InputError
from unetseg.inference.masks import add_object_pixels, object_seeds, write_mask
from unetseg.inference.predictor import TiledPredictor
from unetseg.inference.scheduler import dask_client
from unetseg.io.images import ImageSource, open_image
from unetseg.nn.card import read_card
from unetseg.nn.modelcard import load_model

__all__ = ["InferenceOptions", "check_channels", "infer_sample", "predict_image"]


@dataclass(frozen=True)
class InferenceOptions:
    """How to tile and run the network (``inference.*`` of the config, or predict's options)."""

    tile: int = 1024
    batch_size: int = 1
    border: str = "mirror"
    device: str = "auto"
    tta: bool = False
    amp: bool = False
    blend: str = "none"
    overlap: float = 0.25
    skip_empty: bool = False
    threads: int | None = None

    def predictor(self, model_dir: str | Path) -> TiledPredictor:
        model = load_model(model_dir)
        if self.border == "none" and model.settings["padding"] == "valid":
            raise InputError(
                f"{model_dir}: a valid-padded network needs context beyond the image, which border 'none' "
                "does not give; use --border mirror (inference.border: mirror)."
            )
        return TiledPredictor(
            model, tile=self.tile, batch_size=self.batch_size, border=self.border,
            device=self.device, tta=self.tta, blend=self.blend, overlap=self.overlap, amp=self.amp,
            channels_last=True,
        )  # fmt: skip

    def fingerprint(self, model_dir: str | Path, identity: Any) -> str:
        """Model, the options that change the result, and the input's identity."""
        digest = hashlib.sha256()
        for name in ("weights.pt", "card.json"):
            digest.update((Path(model_dir) / name).read_bytes())
        keys = ("tile", "border", "tta", "blend", "overlap", "skip_empty", "amp")
        settings = {key: asdict(self)[key] for key in keys} | {"input": identity}
        digest.update(json.dumps(settings, sort_keys=True).encode())
        return digest.hexdigest()


def check_channels(predictor: TiledPredictor, channels: int, path: Any) -> None:
    expected = predictor.model.settings["in_channels"]
    if channels != expected:
        raise InputError(
            f"{path}: image has {channels} channel(s) but the model was trained on {expected}. If the file is "
            "a stack of planes rather than channels, give its axis order (--axes ZYX for unetseg predict, "
            "data.axes in the workflow config)."
        )


def infer_sample(model_dir: str, sample: str, output: str, options: InferenceOptions, *, scheduler: str | None) -> None:
    """Probabilities ``(Z, K, Y, X)`` of a preprocessed sample, as Zarr at ``output``."""
    preprocessed = open_sample(sample)
    source = preprocessed.image
    predictor = options.predictor(model_dir)
    check_channels(predictor, source.shape[1], sample)
    output = Path(output)
    partial = output.with_name(f".{output.name}.partial")
    out, ledger = predictor.resumable_output(
        partial, (source.shape[0], *source.shape[2:]), fingerprint=options.fingerprint(model_dir, preprocessed.attrs),
        attributes={"sample": preprocessed.name, "spatial_axes": preprocessed.spatial_axes},
    )  # fmt: skip
    with dask_client(scheduler, workers=options.threads or 2) as client:
        predictor.predict(
            source, out, threads=options.threads, ledger=ledger, client=client, skip_constant=options.skip_empty
        )
    if output.exists():
        shutil.rmtree(output)
    partial.rename(output)
    shutil.rmtree(ledger.directory)


def _file_identity(path: str | None) -> list | None:
    """Path, size and modification time: enough to tell a changed input from the same one."""
    if path is None:
        return None
    stat = Path(path).stat()
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def _warn_small_tile(predictor: TiledPredictor) -> None:
    """Say so when halos cost more than the tiles themselves (e.g. --tile 8)."""
    cost = ((predictor.tile + 2 * predictor.halo) / predictor.tile) ** 2
    if cost > 4:
        print(
            f"note: tile {predictor.tile} with a halo of {predictor.halo} pixels on each side computes "
            f"{cost:.0f}x the pixels it keeps; a --tile of 512 or more is much faster.",
            file=sys.stderr,
        )


@contextmanager
def _tissue_mask(path: str | None, source: ImageSource) -> Iterator[ImageSource | None]:
    """The tissue mask image as a ``(Z, 1, Y, X)`` source, checked against ``source``."""
    if path is None:
        yield None
        return
    with open_image(path) as tissue:
        if (tissue.shape[0], *tissue.shape[2:]) != (source.shape[0], *source.shape[2:]) or tissue.shape[1] != 1:
            raise InputError(
                f"{path}: tissue mask of shape {tissue.spatial_shape} (channels {tissue.shape[1]}) does not match "
                f"the image's spatial shape {source.spatial_shape}; give a one-channel mask of the same size."
            )
        yield tissue


@dataclass(frozen=True)
class PredictOutputs:
    """What ``predict`` writes: the mask, and optionally instance labels and an OME-Zarr."""

    mask: str
    instances: str | None = None
    probabilities: str | None = None
    probabilities_dtype: str = "float16"


def predict_image(
    model_dir: str, image: str, outputs: PredictOutputs, options: InferenceOptions, *,
    axes: str | None = None, tissue_mask: str | None = None,
) -> None:  # fmt: skip
    """Segment one image file of any size: normalised as the model's card says, tiled, resumable."""
    card = read_card(model_dir)
    predictor = options.predictor(model_dir)
    output = Path(outputs.mask)
    with open_image(image, axes=axes) as source, _tissue_mask(tissue_mask, source) as tissue:
        check_channels(predictor, source.shape[1], image)
        stats = percentile_stats(source, *card["normalization"]["percentiles"])
        _warn_small_tile(predictor)
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f".{output.name}.partial")
        identity = {"input": _file_identity(image), "tissue": _file_identity(tissue_mask), "stats": stats}
        probs, ledger = predictor.resumable_output(
            partial / "probabilities.zarr", (source.shape[0], *source.shape[2:]),
            fingerprint=options.fingerprint(model_dir, identity),
        )  # fmt: skip
        try:
            predictor.predict(NormalizedSource(source, stats), probs, threads=options.threads, ledger=ledger,
                              skip_constant=options.skip_empty, tissue=tissue)  # fmt: skip
            threshold, contact = card.get("threshold", 0.5), card.get("target") == "contact"
            shape = write_mask(probs, output, threshold=threshold, spatial_axes=source.spatial_axes, contact=contact)
            print(f"wrote {output} ({'x'.join(map(str, shape))}, threshold {threshold:.3g} from the model card)",
                  file=sys.stderr)  # fmt: skip
            if outputs.instances or outputs.probabilities:
                gap = LINE_WIDTH if card.get("separated_target") or contact else 0
                _write_extras(outputs, probs, threshold, source.spatial_axes, partial, gap, contact)
        except InputError:
            shutil.rmtree(partial, ignore_errors=True)  # a bad input: nothing to resume
            raise
        shutil.rmtree(partial)


def _write_extras(
    outputs: PredictOutputs,
    probs: Any,
    threshold: float,
    spatial_axes: str,
    scratch: Path,
    gap: int = 0,
    contact: bool = False,
) -> None:
    """Instance labels and the OME-Zarr pyramid, from the probabilities; the mask they
    start from goes to ``scratch`` as Zarr. With ``gap``, the instances close the lines
    between touching objects (:func:`unetseg.objects.components.fill_gaps`) and the mask
    file takes their pixels. A contact model's instances start from its objects without their
    contact pixels (:func:`unetseg.inference.masks.object_seeds`)."""
    from unetseg.io.ngff import write_ome_zarr
    from unetseg.objects.components import label_components

    write_mask(probs, scratch / "mask.zarr", threshold=threshold, spatial_axes=spatial_axes, contact=contact)
    mask = zarr.open_array(scratch / "mask.zarr", mode="r")
    if outputs.instances:
        objects = object_seeds(probs, spatial_axes) if contact else mask
        count = label_components(objects, outputs.instances, spatial_axes=spatial_axes, gap=gap,
                                 within=mask if contact else None)  # fmt: skip
        print(f"wrote {outputs.instances} ({count} objects)", file=sys.stderr)
        if gap:
            add_object_pixels(outputs.mask, outputs.instances)
            add_object_pixels(scratch / "mask.zarr", outputs.instances)
    if outputs.probabilities:
        # The instances just written are read back for the labels, not labelled again.
        with open_image(outputs.instances) if outputs.instances else nullcontext() as instances:
            write_ome_zarr(
                outputs.probabilities, probabilities=probs, mask=mask, spatial_axes=spatial_axes,
                instances=None if instances is None else instances.array, dtype=outputs.probabilities_dtype,
            )  # fmt: skip
        print(f"wrote {outputs.probabilities} (OME-Zarr: probabilities, labels/mask"
              f"{', labels/instances' if outputs.instances else ''})", file=sys.stderr)  # fmt: skip
