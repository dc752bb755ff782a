"""Making the plan files: ``plan/data.json`` (stage 1, what tiling needs) and ``plan.json``
(every planned setting), with the fingerprints and the reason for each value."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from unetseg.errors import InputError
from unetseg.io.files import write_json
from unetseg.plan.fingerprint import compute_fingerprint, data_fingerprint
from unetseg.plan.rules import merge, plan_data, plan_training, step_limit, training_batch, widths_to_measure

__all__ = ["FORMAT", "make_data_plan", "make_plan", "read_plan"]

FORMAT = 1


def make_data_plan(
    train: Sequence[str | os.PathLike],
    val: Sequence[str | os.PathLike],
    settings: dict[str, dict[str, Any]],
    output: str | os.PathLike,
) -> dict[str, Any]:
    """Stage 1: fingerprint the training data and plan patch size, depth and weight map.

    Parameters
    ----------
    train, val : sequence of path-like
        Preprocessed training and validation samples.
    settings : dict
        The config's ``tile`` and ``model`` sections (``auto`` where planned).

    Raises
    ------
    InputError
        Too little training data for a quarter of one patch: the message gives the number.
    """
    objects = settings.get("tile", {}).get("weight_map", {}).get("objects", "foreground")
    data = data_fingerprint(train, val, objects=objects)
    planned, reasons = plan_data(data, settings)
    patch = planned["tile"]["patch_size"]
    if data["train_pixels"] < patch**2 // 4:
        raise InputError(
            f"the training images hold {data['train_pixels']} pixels, fewer than a quarter of one "
            f"{patch} px patch; add train rows (or larger images) to the sample sheet."
        )
    plan = {"format": FORMAT, "stage": "data", "settings": planned, "reasons": reasons, "data": data}
    write_json(output, plan)
    return plan


def make_plan(
    data_plan: dict[str, Any], settings: dict[str, dict[str, Any]], output: str | os.PathLike
) -> dict[str, Any]:
    """Stage 2: measure a training step of the candidate widths on the device (at the
    planned depth, patch and batch) and plan the rest; write ``output``.

    Parameters
    ----------
    data_plan : dict
        :func:`make_data_plan`'s result (or :func:`read_plan` of its file).
    settings : dict
        The config's ``model`` and ``train`` sections (``auto`` where planned).

    Raises
    ------
    InputError
        No candidate width fits in the device's memory at the planned patch and batch, or a
        budget too short for one epoch at the planned network: the message gives the numbers
        and what to change.
    """
    data, tiling = data_plan["data"], data_plan["settings"]
    compute = compute_fingerprint(
        device=settings.get("train", {}).get("device", "auto"), channels=max(data["channels"]),
        depth=tiling["model"]["depth"], patch=tiling["tile"]["patch_size"],
        batch=training_batch(data, tiling, settings), widths=widths_to_measure(settings),
        limit_seconds=step_limit(settings), amp=bool(settings.get("train", {}).get("amp", True)),
        model=settings.get("model", {}),
    )  # fmt: skip
    if not compute["seconds_per_patch"]:
        width, batch, patch = compute["out_of_memory"][0], compute["measured_at"]["batch"], tiling["tile"]["patch_size"]
        raise InputError(
            f"a training step of {batch} patches of {patch} px does not fit in the {compute['memory_gb']:g} GB of "
            f"the {compute['device']} even at {width} base channels (model.depth {tiling['model']['depth']}); set a "
            "smaller train.batch_size or tile.patch_size (or model.base_channels), or train on a larger device."
        )
    planned, reasons, estimates = plan_training(data, tiling, compute, settings)
    if reasons["train.epochs"] != "set in the config" and estimates["seconds_per_epoch"] > estimates["budget_seconds"]:
        raise InputError(
            f"train.max_minutes {settings['train'].get('max_minutes')} is too short for one epoch: "
            f"{estimates['patches_per_epoch']} patches at an estimated {estimates['seconds_per_step']:.2f} s per "
            f"step take {estimates['seconds_per_epoch'] / 60:.1f} min; raise train.max_minutes, or set a smaller "
            "tile.patch_size or model.base_channels."
        )
    plan = {
        "format": FORMAT, "stage": "training", "settings": merge(tiling, planned),
        "reasons": {**data_plan["reasons"], **reasons}, "estimates": estimates, "data": data, "compute": compute,
    }  # fmt: skip
    write_json(output, plan)
    return plan


def read_plan(path: str | os.PathLike) -> dict[str, Any]:
    """A plan file written by :func:`make_data_plan` or :func:`make_plan`."""
    try:
        with open(path) as handle:
            plan = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(
            f"{path}: cannot read the plan ({err}); delete it and rerun the workflow's plan step."
        ) from err
    if plan.get("format") != FORMAT:
        raise InputError(f"{path}: not a plan of format {FORMAT}; delete it and rerun the workflow's plan step.")
    return plan
