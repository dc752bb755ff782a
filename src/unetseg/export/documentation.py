"""The README of an exported package, generated from the model card."""

from __future__ import annotations

import json
from typing import Any

import yaml

from unetseg.export.tensors import INPUT_ID, OUTPUT_ID, Geometry

UNET_PAPER = {
    "text": "Ronneberger O, Fischer P, Brox T. U-Net: Convolutional Networks for Biomedical Image Segmentation. "
    "Medical Image Computing and Computer-Assisted Intervention (MICCAI 2015), LNCS 9351, 234-241.",
    "doi": "10.1007/978-3-319-24574-4_28",
}


def _yaml(value: Any) -> str:
    return yaml.safe_dump(json.loads(json.dumps(value)), sort_keys=False, default_flow_style=False).strip()


def _training_data_lines(card: dict[str, Any]) -> list[str]:
    data, provenance = card.get("data") or {}, card.get("provenance") or {}
    lines = []
    if data.get("dataset"):
        lines.append(f"Dataset `{data['dataset']}`: {len(data.get('train') or [])} training and "
                     f"{len(data.get('val') or [])} validation image(s).")  # fmt: skip
    sheet = provenance.get("sample_sheet")
    if sheet:
        lines += ["", f"Sample sheet `{sheet.get('path')}`, SHA-256 `{sheet.get('sha256')}`."]
    inputs = provenance.get("inputs") or {}
    if inputs:
        lines += ["", "| sample | file | SHA-256 |", "| --- | --- | --- |"]
        lines += [
            f"| {sample} | `{path}` | `{sha}` |" for sample, files in inputs.items() for path, sha in files.items()
        ]
    elif data.get("files"):
        lines += ["", "| sample | files |", "| --- | --- |"]
        lines += [f"| {s} | {', '.join(f'`{p}`' for p in files if p)} |" for s, files in data["files"].items()]
    if provenance.get("git_commit"):
        lines += ["", f"Workflow commit: `{provenance['git_commit']}`."]
    return lines or ["The model card records no training data."]


def _documentation(card: dict[str, Any], fits: Geometry, percentiles: tuple[float, float], *, name: str,
                   test_image: str, formats: list[str], threshold: float) -> str:  # fmt: skip
    """README.md of the package, generated from the model card."""
    arch = card["architecture"]
    classes = arch["out_channels"]
    training = card.get("training") or {}
    low, high = percentiles
    if fits.padding == "same":
        sizes = (
            f"Inputs of `{fits.min} + n * {fits.step}` pixels per side (the network takes multiples of "
            f"{fits.step} = 2^depth; the smallest described leaves {fits.step} inside the halo). The output has "
            f"the input's size; its outer {fits.halo} pixels on each "
            f"side (the `halo`, the network's receptive-field radius rounded up to {fits.step}) see the zero "
            "padding of the convolutions and should be cropped: tile with an overlap of twice the halo and "
            "pad the image border by mirroring (`pad: reflect`), as unetseg does. Tiled this way the result "
            "equals unetseg's (`unetseg predict`)."
        )
    else:
        sizes = (
            f"Inputs of `{fits.min} + n * {fits.step}` pixels per side. Unpadded (valid) convolutions, as "
            f"in the U-Net paper: the output is {2 * fits.margin} pixels smaller than the input, i.e. it "
            f"covers the input without a margin of {fits.margin} pixels on each side (the halo the network "
            f"crops itself, written as `size.offset: {-2 * fits.margin}`). To segment a whole image, pad it by "
            f"{fits.margin} pixels (mirroring) first; unetseg's tiles start {fits.margin} pixels before the "
            "image, which keeps the 2x2 pooling grid the same when the margin is a multiple of 2^depth."
        )
    scores = {k: training[k] for k in ("best_val_dice", "best_epoch", "epochs_run", "val_dice_at_threshold",
                                        "validation", "stopped_by") if k in training}  # fmt: skip
    sections = [
        f"# {name}",
        "",
        "A U-Net (Ronneberger, Fischer & Brox, MICCAI 2015) trained with "
        "[unetseg](#citation), exported with `unetseg export` from its model card (`card.json`, attached "
        "unchanged). "
        + (
            "One output channel: the foreground probability."
            if classes == 1
            else f"{classes} output channels: the class probabilities (softmax)."
        ),
        "",
        "## Input",
        "",
        f"`{INPUT_ID}`: axes batch, channel ({arch['in_channels']}), y, x; any numeric type (read as float32).",
        "",
        sizes,
        "",
        "## Preprocessing",
        "",
        f"Per image and channel, percentile {low:g} of the intensities is mapped to 0 and percentile {high:g} to 1 "
        f"(`scale_range` over the y and x axes, percentiles {low:g} and {high:g}, no clipping), as unetseg "
        "normalised the training images. Where the two differ:",
        "",
        "- unetseg computes the percentiles over the whole image file (all planes of a stack, and on a "
        "regular subsample of at most 2^22 pixels per channel for larger images); bioimage.io software "
        "computes them on each 2D sample it is given. Give whole images, not tiles, for the same statistics.",
        "- `scale_range` divides by `p_high - p_low + 1e-6` (the spec's epsilon), unetseg by "
        "`p_high - p_low`: a relative difference below 1e-6 for camera counts.",
        "- bioimageio.core's tiled prediction (`blocksize_parameter`) computes them on the whole image "
        "before it tiles, as unetseg does; its untiled prediction pads the image by the halo first, which "
        "shifts them slightly.",
        "- unetseg refuses images with NaN or infinite pixels; bioimage.io software does not check.",
        "",
        "## Output",
        "",
        f"`{OUTPUT_ID}`: axes batch, channel ({classes}), y, x; probabilities in 0..1 after "
        + ("`sigmoid`." if classes == 1 else "`softmax` over the channel axis.")
        + (
            " Channels background, object, contact (the network was trained to mark where touching objects "
            "meet): unetseg's mask is every pixel whose most probable channel is not background, and its "
            "objects are the connected `object` pixels grown over the `contact` pixels; the package does not "
            "do this."
            if card.get("target") == "contact"
            else f" unetseg's mask is `probability >= {threshold:.4g}` (the threshold tuned on the validation "
            "images, `threshold` in the card); the package does not threshold."
        ),
        "",
        "## Weights",
        "",
        "- `torchscript`: needs only PyTorch (deepImageJ, QuPath, bioimageio.core).",
        "- `pytorch_state_dict`: `unetseg.nn.model.UNet` with the architecture below; needs unetseg "
        "installed. Its file is unetseg's own `weights.pt`.",
    ]
    if "onnx" in formats:
        sections.append("- `onnx`: checked with onnxruntime at export.")
    sections += [
        "",
        "```yaml",
        _yaml({k: v for k, v in arch.items() if k != "name"}),
        "```",
        "",
        "## Validation",
        "",
        test_image,
        "",
        "`bioimageio test` (bioimageio.core) checks that bioimage.io software reproduces the test output "
        "from the test input with each weight format. unetseg's own tests check, on such a package, that "
        "bioimageio.core's tiled prediction (`predict(..., blocksize_parameter=n)`) equals unetseg's "
        "prediction to 1e-4, and that `open_exported` rebuilds the model directory byte for byte.",
        "",
        "## Training data",
        "",
        *_training_data_lines(card),
        "",
        "## Scores",
        "",
    ]
    if scores:
        sections += ["| measure | value |", "| --- | --- |"]
        sections += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in scores.items()]
        sections.append(f"| threshold | {threshold:.4g} |")
    else:
        sections.append(f"The model card records no validation scores. Threshold: {threshold:.4g}.")
    config = {k: card[k] for k in ("model_config", "train_config", "config", "labels") if k in card}
    if config:
        sections += ["", "## Configuration", "", "```yaml", _yaml(config), "```"]
    versions = card.get("versions")
    if versions:
        sections += ["", "## Versions that trained it", "", "```yaml", _yaml(versions), "```"]
    sections += [
        "",
        "## Citation",
        "",
        f"- {UNET_PAPER['text']} doi:{UNET_PAPER['doi']}",
        "- unetseg, the software that trained and exported this model (see `cite` in the package's description).",
        "",
        "## Back to unetseg",
        "",
        "`unetseg.export.unpack.open_exported` turns this package into the unetseg model directory it was "
        "exported from (`weights.pt` and the attached `card.json`, byte for byte).",
        "",
        "## License",
        "",
        "MIT.",
        "",
    ]
    return "\n".join(sections)
