"""Checks of a ``trained_model`` against the sample sheet, before any job runs.

Reads only the model card (JSON) and the images' headers: parsing the workflow loads
neither torch nor the images themselves.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from unetseg.errors import InputError
from unetseg.export.unpack import open_exported
from unetseg.io.images import open_image
from unetseg.nn.card import CARD, WEIGHTS, read_card

__all__ = ["check_trained_model", "check_init_from"]


def check_trained_model(model: str, samples: pd.DataFrame, *, axes: str = "auto", border: str = "mirror") -> dict:
    """Check that ``model`` is a unetseg model that fits every image of ``samples``.

    Parameters
    ----------
    model : str
        The ``trained_model`` config value: a model directory.
    samples : DataFrame
        The checked sample sheet.
    axes : str
        ``data.axes`` of the config.
    border : str
        ``inference.border`` of the config.

    Returns
    -------
    dict
        The model's card.

    Raises
    ------
    InputError
        One line naming the key or file and the fix: the path is missing or not a model,
        the card is of another format, the sheet holds train/val rows, an image's
        channel count differs from the model's, an image file is missing, or border 'none'
        meets a valid-padded model. An image that exists but cannot be read is only a
        warning here: its segment job records it as failed, with the reason, and segments
        the others.
    """
    path = Path(model)
    if not path.exists():
        raise InputError(
            f"trained_model: {model} does not exist; give the model directory of an earlier run "
            "(results/<dataset>/model) or of a colleague."
        )
    if path.suffix == ".zip" or (path / "rdf.yaml").is_file():  # a bioimage.io package exported by unetseg
        try:
            path = open_exported(path)
        except InputError as err:
            raise InputError(f"trained_model: {err}") from None
    if not (path / CARD).is_file() or not (path / WEIGHTS).is_file():
        raise InputError(
            f"trained_model: {model} is not a unetseg model directory (it needs {CARD} and {WEIGHTS}); "
            "give results/<dataset>/model of the run that trained it."
        )
    try:
        card = read_card(path)
    except InputError as err:
        raise InputError(f"trained_model: {err}") from None
    training = samples.loc[samples["split"].isin(["train", "val"]), "sample"].tolist()
    if training:
        raise InputError(
            f"trained_model is set, so nothing is trained, but the sample sheet has train/val rows "
            f"({', '.join(training[:5])}{', ...' if len(training) > 5 else ''}); make them test or "
            "predict rows, or remove trained_model to train a new model."
        )
    if border == "none" and card["architecture"].get("padding") == "valid":
        raise InputError(
            f"trained_model: {model} is a valid-padded network, which needs context beyond the image, "
            "but inference.border is 'none'; set inference.border: mirror."
        )
    expected = card["architecture"]["in_channels"]
    for row in samples.itertuples(index=False):
        if not Path(row.image).exists():  # a wrong path in the sheet: an error, before any job
            raise InputError(f"{row.image} (sample {row.sample}): file not found; check its path in the sample sheet.")
        try:
            with open_image(row.image, axes=None if axes == "auto" else axes) as image:
                channels = image.shape[1]
        except InputError as err:  # one bad image must not stop the batch: it fails in its own job
            print(f"warning: sample {row.sample} will fail, the others are segmented: {err}", file=sys.stderr)
            continue
        if channels != expected:
            raise InputError(
                f"{row.image} (sample {row.sample}): {channels} channel(s), but trained_model {model} "
                f"takes {expected}; segment it with a model trained on {channels}-channel images, or "
                "set data.axes if the file's axis order was read wrongly."
            )
    return card


ARCHITECTURE_KEYS = ("depth", "base_channels", "padding", "batch_norm", "upsampling")


def check_init_from(model: str, model_section: dict) -> dict:
    """Check that ``train.init_from`` is a model whose architecture is ``model.*`` of the config.

    Raises
    ------
    InputError
        Naming the key, the two values and the fix.
    """
    path = Path(model)
    if not (path / CARD).is_file() or not (path / WEIGHTS).is_file():
        raise InputError(
            f"train.init_from: {model} is not a unetseg model directory (it needs {CARD} and {WEIGHTS}); "
            "give results/<dataset>/model of an earlier run, or leave init_from empty."
        )
    try:
        card = read_card(path)
    except InputError as err:
        raise InputError(f"train.init_from: {err}") from None
    for key in ARCHITECTURE_KEYS:
        theirs = card["architecture"].get(key)
        if key in model_section and model_section[key] not in (theirs, "auto"):  # auto: the plan takes theirs
            raise InputError(
                f"train.init_from: {model} has model.{key} = {theirs!r} but the config says "
                f"{model_section[key]!r}; set model.{key}: {theirs!r} to fine-tune it."
            )
    return card
