"""Export a trained model as a bioimage.io package (model spec 0.5) that Fiji (deepImageJ),
ilastik, QuPath and bioimageio.core run.

The package is written with the ``bioimageio.spec`` library, which validates it while
writing it. It holds:

* the weights twice: ``pytorch_state_dict`` (this model directory's ``weights.pt``; the
  architecture is :class:`unetseg.nn.model.UNet` with the card's keyword arguments, so it
  needs unetseg installed) and TorchScript (traced, needs only PyTorch: what deepImageJ and
  QuPath run), optionally ONNX;
* one input ``raw`` (batch, channel, y, x) and one output ``probabilities`` with the sizes
  the network accepts: same padding, ``min + n * 2**depth`` with an output of the input's
  size and a ``halo`` of the receptive field, so that tiling consumers overlap their tiles
  as unetseg does (and get its result); valid padding, the paper's unpadded network, an
  output smaller than the input by the network's margin on each side (``size.offset``, the
  spec's way to describe a halo that the network already cropped);
* the card's normalisation as the spec's ``scale_range`` (per image and channel, the
  card's percentiles mapped to 0..1), then ``sigmoid`` (one output channel) or ``softmax``;
* test tensors from a real image (``sample_image``) or a synthetic one, a cover image, the
  citations (the U-Net paper and unetseg), the MIT license, a README generated from the
  model card, and the original ``card.json`` (and ``history.csv``) as attachments, from
  which :func:`unetseg.export.unpack.open_exported` rebuilds the model directory.

bioimageio.spec and bioimageio.core are imported only when a package is exported.
"""

from __future__ import annotations

import gc
import hashlib
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from unetseg.errors import InputError
from unetseg.export.documentation import UNET_PAPER, _documentation
from unetseg.export.tensors import (
    INPUT_ID,
    OUTPUT_ID,
    Geometry,
    _cover,
    _reference_output,
    _sample_image,
    _synthetic_image,
    geometry,
)
from unetseg.export.unpack import ARCHITECTURE, CONFIG_KEY, open_exported
from unetseg.nn.card import CARD, WEIGHTS, read_card

__all__ = [
    "export_bioimageio",
    "citation_url",
    "open_exported",
    "Geometry",
    "geometry",
    "UNET_PAPER",
    "INPUT_ID",
    "OUTPUT_ID",
]

_TORCH_JIT_DEPRECATED = r"`torch\.jit\.\w+` is deprecated"


# --- inputs ---------------------------------------------------------------------------------


def _check_paths(model_dir: Path, output: Path) -> None:
    if output.suffix.lower() != ".zip":
        raise InputError(
            f"{output}: --output must name a .zip file (a bioimage.io package), e.g. {output.with_suffix('.zip').name}."
        )
    if not model_dir.is_dir() or not (model_dir / CARD).is_file() or not (model_dir / WEIGHTS).is_file():
        raise InputError(
            f"{model_dir}: not a unetseg model directory (it needs {CARD} and {WEIGHTS}); pass the model "
            "directory of a training run (results/<dataset>/model)."
        )


def _percentiles(card: dict[str, Any], model_dir: Path) -> tuple[float, float]:
    normalization = card.get("normalization") or {}
    method, percentiles = normalization.get("method"), normalization.get("percentiles")
    if method != "percentile" or not isinstance(percentiles, list | tuple) or len(percentiles) != 2:
        raise InputError(
            f"{model_dir / CARD}: normalization {normalization!r} cannot be exported (bioimage.io packages "
            "describe percentile normalisation); retrain with preprocess.percentiles set."
        )
    low, high = (float(p) for p in percentiles)
    if not (0 <= low < 100 and 1 < high <= 100 and low < high):
        raise InputError(
            f"{model_dir / CARD}: percentiles {percentiles} cannot be written as bioimage.io scale_range "
            "(it needs 0 <= low < high <= 100 and high > 1); retrain with other preprocess.percentiles."
        )
    return low, high


# --- the files of the package ---------------------------------------------------------------


def _torchscript(model: Any, example: np.ndarray, path: Path) -> None:
    """Trace the network (TorchScript is what deepImageJ and QuPath run) and check the trace
    on another input size and batch against the network itself."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(example[np.newaxis]))
    with torch.no_grad(), warnings.catch_warnings():
        # torch 2.9+ deprecates TorchScript in favour of torch.export, but bioimage.io
        # consumers (deepImageJ, QuPath, bioimageio.core) load TorchScript weights.
        warnings.filterwarnings("ignore", message=_TORCH_JIT_DEPRECATED, category=DeprecationWarning)
        traced = torch.jit.trace(model, x)
        traced.save(str(path))
        other = torch.rand((2, x.shape[1], x.shape[2] + model.grid, x.shape[3] + 2 * model.grid), generator=None)
        if not torch.allclose(traced(other), model(other), atol=1e-5, rtol=1e-5):
            raise RuntimeError("the TorchScript trace of the U-Net does not generalise to other input sizes")


def _onnx(model: Any, example: np.ndarray, path: Path) -> int:
    """Export ONNX weights (torch.export-based exporter; batch and spatial sizes dynamic) and
    check them with onnxruntime on another input size; returns the opset."""
    import onnxruntime
    import torch

    opset = 18
    x = torch.from_numpy(np.ascontiguousarray(example[np.newaxis]))
    dynamic = torch.export.Dim.DYNAMIC
    with torch.no_grad():
        program = torch.onnx.export(
            model, (x,), input_names=["input"], output_names=["output"], opset_version=opset, dynamo=True,
            dynamic_shapes={"x": {0: dynamic, 2: dynamic, 3: dynamic}}, verbose=False,
        )  # fmt: skip
        program.save(str(path), external_data=False)
        other = torch.rand((2, x.shape[1], x.shape[2] + model.grid, x.shape[3] + 2 * model.grid))
        expected = model(other).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {"input": other.numpy()})[0]
    if not np.allclose(actual, expected, atol=1e-4, rtol=1e-4):
        raise RuntimeError("onnxruntime's output of the exported ONNX U-Net differs from PyTorch's")
    return opset


def citation_url(given: str | None = None) -> str:
    """The URL to cite unetseg by: given, else the installed distribution's project URL."""
    if given:
        return given
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        urls = metadata("unetseg").get_all("Project-URL") or []
    except PackageNotFoundError:
        urls = []
    found = {label.strip().lower(): url.strip() for label, _, url in (u.partition(",") for u in urls)}
    for label in ("repository", "source", "source code", "homepage", "documentation"):
        if found.get(label, "").startswith(("http://", "https://")):
            return found[label]
    raise InputError(
        "unetseg export: no URL to cite unetseg by (bioimage.io citations need a DOI or URL); pass "
        "--software-url with the address of the unetseg repository you use."
    )


def _channel_names(card: dict[str, Any], classes: int) -> list[str]:
    """Output channel names: ``foreground``, or ``background`` and labels.classes' names."""
    if card.get("target") == "contact" and classes == 3:
        return ["background", "object", "contact"]
    if classes == 1:
        return ["foreground"]
    names = list(card.get("classes") or [])
    return ["background", *names] if len(names) + 1 == classes else [f"class{k}" for k in range(classes)]


def _name(card: dict[str, Any], given: str | None) -> str:
    dataset = (card.get("data") or {}).get("dataset") or (card.get("config") or {}).get("dataset")
    name = given or (f"unetseg U-Net {dataset}" if dataset else "unetseg U-Net")
    cleaned = re.sub(r"[^A-Za-z0-9_+\- ()]", "-", name).strip()[:128]
    if len(cleaned) < 5:
        raise InputError(f"--name {name!r}: a bioimage.io name needs 5 to 128 letters, digits, spaces or _+-().")
    return cleaned


@contextmanager
def _collecting_unclosed_files() -> Iterator[None]:
    """Silence and collect the file objects that bioimageio.spec leaves open.

    bioimageio.spec 0.5.12 opens every file it hashes or packages (``get_reader``) and leaves
    closing them to the garbage collector: their ResourceWarnings would surface in the middle
    of its calls or at some later, unrelated point (as errors where warnings are errors).
    They are expected here, so they are ignored, and the files closed before returning.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield
        finally:
            gc.collect()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the export -----------------------------------------------------------------------------


def export_bioimageio(
    model_dir: str | os.PathLike,
    output: str | os.PathLike,
    *,
    sample_image: str | os.PathLike | None = None,
    axes: str | None = None,
    name: str | None = None,
    authors: list[str] | None = None,
    software_url: str | None = None,
    tags: list[str] | None = None,
    onnx: bool = False,
) -> Path:
    """Write the bioimage.io package (model spec 0.5) of a unetseg model directory.

    Parameters
    ----------
    model_dir : path-like
        A model directory (``weights.pt`` + ``card.json``).
    output : path-like
        The ``.zip`` to write (atomically: no partial file is left on failure).
    sample_image : path-like, optional
        A real image (TIFF or Zarr; e.g. a validation image) for the test tensors and the
        cover: the middle plane, cropped in its centre to the largest described input size up
        to 256 pixels (or the smallest, if that is larger). Default: a synthetic nuclei image
        (:func:`unetseg.data.demo.synthetic_nuclei`), which the README says.
    axes : str, optional
        Axis order of ``sample_image`` if not in its metadata.
    name : str, optional
        The package's name (default: "unetseg U-Net <dataset>").
    authors : list of str, optional
        Names of the people who trained the model.
    software_url : str, optional
        URL to cite unetseg by; default: the installed distribution's project URL.
    tags : list of str, optional
        Extra tags (e.g. "nuclei", "fluorescence-light-microscopy").
    onnx : bool
        Add ONNX weights, checked with onnxruntime (needs ``onnx`` and ``onnxruntime``).

    Returns
    -------
    Path
        ``output``.

    Raises
    ------
    InputError
        ``model_dir`` is not a model directory, ``output`` does not end in ``.zip``, the
        card's normalisation cannot be written as bioimage.io preprocessing, or the sample
        image does not fit the model.
    """
    # Long on purpose: it fills one bioimage.io description (the spec's ModelDescr) section by
    # section, in the spec's order, inside the staging directory whose files every section
    # refers to; the pieces that stand on their own are in .tensors and .documentation.
    model_dir, output = Path(model_dir), Path(output)
    _check_paths(model_dir, output)
    for author in authors or []:
        if "/" in author or not author.strip():
            raise InputError(f"--author {author!r}: give a person's name (no slash), once per author.")
    card = read_card(model_dir)
    percentiles = _percentiles(card, model_dir)
    url = citation_url(software_url)
    package_name = _name(card, name)

    import torch
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5

    from unetseg import __version__
    from unetseg.nn.modelcard import load_model

    model = load_model(model_dir)
    arch = card["architecture"]
    channels, classes = arch["in_channels"], arch["out_channels"]
    fits = geometry(model)
    threshold = float(card.get("threshold", 0.5))
    if sample_image is not None:
        image = _sample_image(sample_image, axes, channels, fits)
        test_note = (f"The test input is the central {image.shape[1]}x{image.shape[2]} pixels of "
                     f"`{Path(sample_image).name}` (given as --sample-image), the test output unetseg's "
                     "probabilities for it (one pass of the whole test input through the network).")  # fmt: skip
    else:
        image = _synthetic_image(channels, fits)
        test_note = (f"The test input is a synthetic {image.shape[1]}x{image.shape[2]} fluorescence-nuclei image "
                     "(`unetseg.data.demo.synthetic_nuclei`; no --sample-image was given), not an image of the "
                     "training data: it checks the computation, not the model's quality on real data. "
                     "The test output is unetseg's probabilities for it.")  # fmt: skip
    normalized, probabilities = _reference_output(model, image, percentiles)

    output.parent.mkdir(parents=True, exist_ok=True)
    with (
        _collecting_unclosed_files(),
        tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as staging_name,
    ):
        staging = Path(staging_name)
        np.save(staging / "test_input.npy", image[np.newaxis])
        np.save(staging / "test_output.npy", probabilities)
        # what a person opens in Fiji: channels as pages
        tifffile.imwrite(staging / "sample_input.tif", image, photometric="minisblack")
        tifffile.imwrite(staging / "sample_output.tif", probabilities[0], photometric="minisblack")
        _cover(normalized, probabilities, staging / "cover.png")
        _torchscript(model, normalized, staging / "weights_torchscript.pt")
        formats = ["pytorch_state_dict", "torchscript"]
        opset = None
        if onnx:
            opset = _onnx(model, normalized, staging / "weights.onnx")
            formats.append("onnx")
        (staging / "README.md").write_text(
            _documentation(
                card, fits, percentiles, name=package_name, test_image=test_note, formats=formats, threshold=threshold
            )
        )

        spatial_in = [
            v0_5.SpaceInputAxis(id=v0_5.AxisId(a), size=v0_5.ParameterizedSize(min=fits.min, step=fits.step))
            for a in ("y", "x")
        ]
        if fits.padding == "same":
            spatial_out = [
                v0_5.SpaceOutputAxisWithHalo(
                    id=v0_5.AxisId(a),
                    halo=fits.halo,
                    size=v0_5.SizeReference(tensor_id=v0_5.TensorId(INPUT_ID), axis_id=v0_5.AxisId(a)),
                )
                for a in ("y", "x")
            ]
        else:
            spatial_out = [
                v0_5.SpaceOutputAxis(
                    id=v0_5.AxisId(a),
                    size=v0_5.SizeReference(
                        tensor_id=v0_5.TensorId(INPUT_ID), axis_id=v0_5.AxisId(a), offset=-2 * fits.margin
                    ),
                )
                for a in ("y", "x")
            ]
        low, high = percentiles
        inputs = [
            v0_5.InputTensorDescr(
                id=v0_5.TensorId(INPUT_ID),
                description="image; normalised by per-channel percentiles in preprocessing",
                axes=[
                    v0_5.BatchAxis(),
                    v0_5.ChannelAxis(channel_names=[f"channel{c}" for c in range(channels)]),
                    *spatial_in,
                ],
                test_tensor=v0_5.FileDescr(source=staging / "test_input.npy"),
                sample_tensor=v0_5.FileDescr(source=staging / "sample_input.tif"),
                data=v0_5.IntervalOrRatioDataDescr(type="float32"),
                # mode given explicitly: bioimageio.spec 0.5.12 writes an unset default as
                # `pad: {}`, which reads back as constant (zero) padding
                pad=v0_5.ReflectPadding(mode="reflect"),
                preprocessing=[
                    v0_5.ScaleRangeDescr(
                        kwargs=v0_5.ScaleRangeKwargs(
                            axes=[v0_5.AxisId("y"), v0_5.AxisId("x")], min_percentile=low, max_percentile=high
                        )
                    )
                ],
            )
        ]
        post = (
            [v0_5.SigmoidDescr()]
            if classes == 1
            else [v0_5.SoftmaxDescr(kwargs=v0_5.SoftmaxKwargs(axis=v0_5.AxisId("channel")))]
        )
        outputs = [
            v0_5.OutputTensorDescr(
                id=v0_5.TensorId(OUTPUT_ID),
                description="foreground probability" if classes == 1 else "class probabilities",
                axes=[
                    v0_5.BatchAxis(),
                    v0_5.ChannelAxis(channel_names=_channel_names(card, classes)),
                    *spatial_out,
                ],
                test_tensor=v0_5.FileDescr(source=staging / "test_output.npy"),
                sample_tensor=v0_5.FileDescr(source=staging / "sample_output.tif"),
                data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
                postprocessing=post,
            )
        ]
        torch_version = v0_5.Version(torch.__version__.split("+")[0])
        weight_entries: dict[str, Any] = dict(
            pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
                source=model_dir / WEIGHTS,
                sha256=v0_5.Sha256(_sha256(model_dir / WEIGHTS)),
                architecture=v0_5.ArchitectureFromLibraryDescr(
                    callable=v0_5.Identifier(ARCHITECTURE["callable"]),
                    import_from=ARCHITECTURE["import_from"],
                    kwargs={k: v for k, v in arch.items() if k != "name"},
                ),
                pytorch_version=torch_version,
                comment=f"unetseg {__version__}: the model directory's weights.pt",
            ),
            torchscript=v0_5.TorchscriptWeightsDescr(
                source=staging / "weights_torchscript.pt",
                pytorch_version=torch_version,
                parent="pytorch_state_dict",
                comment=f"traced with torch.jit.trace by unetseg {__version__}",
            ),
        )
        if opset is not None:
            weight_entries["onnx"] = v0_5.OnnxWeightsDescr(
                source=staging / "weights.onnx",
                opset_version=opset,
                parent="pytorch_state_dict",
                comment=f"exported with torch.onnx (dynamo) by unetseg {__version__}, checked with onnxruntime",
            )
        weights = v0_5.WeightsDescr(**weight_entries)
        attachments = [v0_5.FileDescr(source=model_dir / CARD, sha256=v0_5.Sha256(_sha256(model_dir / CARD)))]
        if (model_dir / "history.csv").is_file():
            attachments.append(v0_5.FileDescr(source=model_dir / "history.csv"))
        summary = card.get("training") or {}
        description = (
            f"U-Net (depth {arch['depth']}, {arch['padding']} padding) for "
            + ("binary" if classes == 1 else "object/contact" if card.get("target") == "contact" else f"{classes}-class")
            + " segmentation of microscopy images, trained and exported with unetseg"
            + (
                f"; validation Dice {summary['best_val_dice']:.3f}"
                if isinstance(summary.get("best_val_dice"), float)
                else ""
            )
            + ("; mask = most probable channel not background." if card.get("target") == "contact"
               else f"; mask = probability >= {threshold:.3g}.")
        )  # fmt: skip
        descr = v0_5.ModelDescr(
            name=package_name,
            description=description,
            authors=[v0_5.Author(name=a) for a in (authors or [])],
            packaged_by=[v0_5.Author(name=f"unetseg {__version__}")],
            cite=[
                v0_5.CiteEntry(text=UNET_PAPER["text"], doi=v0_5.Doi(UNET_PAPER["doi"])),
                v0_5.CiteEntry(
                    text=f"unetseg {__version__}: U-Net segmentation of microscopy images, a reproducible "
                    "Snakemake workflow (trained and exported this model).",
                    url=url,
                ),
            ],
            license=v0_5.LicenseId("MIT"),
            documentation=v0_5.FileDescr(source=staging / "README.md"),
            covers=[v0_5.FileDescr(source=staging / "cover.png")],
            tags=sorted({"unet", "2d", "pytorch", "semantic-segmentation", "unetseg", *(tags or [])}),
            inputs=inputs,
            outputs=outputs,
            weights=weights,
            attachments=attachments,
            config=v0_5.Config(
                bioimageio=v0_5.BioimageioConfig(
                    architecture_type="unet",
                    architecture_description="U-Net of Ronneberger, Fischer & Brox (MICCAI 2015)",
                    task="semantic-segmentation",
                ),
                **{
                    CONFIG_KEY: {
                        "card": CARD,
                        "unetseg_version": __version__,
                        "threshold": threshold,
                        "normalization": card["normalization"],
                        "tiling": {
                            "padding": fits.padding,
                            "halo": fits.halo,
                            "margin": fits.margin,
                            "grid": fits.step,
                            "border": "mirror",
                        },
                        "test_image": str(Path(sample_image).name) if sample_image is not None else "synthetic",
                    }
                },
            ),
        )
        written = save_bioimageio_package(descr, output_path=staging / "package.zip")
        os.replace(written, output)
    return output
