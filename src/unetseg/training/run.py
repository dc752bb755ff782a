"""Training as the workflow runs it: settings from the config, the Trainer, the model directory."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import zarr

from unetseg.errors import InputError
from unetseg.nn.card import WEIGHTS, read_card
from unetseg.nn.device import pick_device
from unetseg.nn.model import UNet
from unetseg.nn.modelcard import save_model
from unetseg.training.loading import PatchesInMemory
from unetseg.training.trainer import ModelConfig, TrainConfig, Trainer, seed_everything, settings_from_dict
from unetseg.training.validation import WholeImageValidator, best_threshold

__all__ = ["train_model"]


def _fingerprint(
    patches: str | os.PathLike,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    val_images: list | None = None,
    border: str = "mirror",
) -> str:
    """Identity of a training run: settings that shape the result, and the patch store."""
    settings = {**asdict(train_cfg), **{f"model.{k}": v for k, v in asdict(model_cfg).items()}}
    for volatile in ("max_minutes", "checkpoint_minutes", "num_workers"):
        settings.pop(volatile)
    store = zarr.open_group(str(patches), mode="r")
    data = {split: dict(store[split].attrs) for split in ("train", "val")}
    validation = [str(path) for path in val_images or []] + [border]
    if train_cfg.init_from:  # the starting weights shape the result too
        settings["init_from"] = hashlib.sha256((Path(train_cfg.init_from) / WEIGHTS).read_bytes()).hexdigest()
    text = json.dumps(
        {"settings": settings, "data": data, "store": dict(store.attrs), "validation": validation}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _initialise_from(model: UNet, directory: str) -> None:
    """Start from the weights of a trained model of the same architecture (fine-tuning)."""
    card = read_card(directory)
    theirs = {k: v for k, v in card["architecture"].items() if k not in ("name", "dropout")}
    ours = {k: v for k, v in model.settings.items() if k in theirs}
    different = {k: (theirs[k], ours[k]) for k in ours if theirs[k] != ours[k]}
    if different:
        key, (a, b) = next(iter(different.items()))
        raise InputError(
            f"train.init_from: {directory} has {key} = {a!r} but this training builds {b!r}; set model.{key} "
            "as in its card (in_channels/out_channels: images with as many channels, the same classes)."
        )
    model.load_state_dict(torch.load(Path(directory) / WEIGHTS, map_location="cpu", weights_only=True))
    print(f"initialised from {directory}", file=sys.stderr)


def _history_csv(history: list[dict[str, float]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue().encode()


def train_model(
    patches: str | os.PathLike,
    output: str | os.PathLike,
    *,
    model_settings: dict[str, Any],
    train_settings: dict[str, Any],
    card: dict[str, Any] | None = None,
    checkpoint: str | os.PathLike | None = None,
    val_images: list[str | os.PathLike] | None = None,
    border: str = "mirror",
) -> dict[str, Any]:
    """Train a U-Net on a patch store and write the model directory.

    Parameters
    ----------
    patches : path-like
        Patch store written by :func:`unetseg.patches.write_patches`.
    output : path-like
        Model directory to write (weights, card, ``history.csv``).
    model_settings, train_settings : dict
        The config's ``model`` and ``train`` sections.
    card : dict, optional
        Extra entries for the model card (normalisation, data, config).
    val_images : list of path-like, optional
        Preprocessed validation samples: validation Dice is then measured on these whole
        images through tiled inference (as at predict time) instead of on the patches,
        and the probability threshold that maximises it is stored in the model card.
    border : {"mirror", "zero"}
        Border padding of that inference (the workflow uses ``mirror``, the paper's).
    checkpoint : path-like, optional
        Where to keep the training state every ``checkpoint_minutes``. If a checkpoint of
        the same configuration and data is there, training continues from it (after a
        kill, a walltime limit...) and ends as the uninterrupted run would have: it keeps the
        planned number of steps of the checkpoint, measured when the run started, rather than
        planning again. The checkpoint is deleted once the model is written.

    Returns
    -------
    dict
        Summary: best validation Dice and its epoch, epochs and steps run, seconds, what
        stopped training, the planned steps and epochs, whether ``max_minutes`` bound the
        plan and the step and validation times measured for it
        (:mod:`unetseg.training.schedule`). The model card holds it as ``training``.
    """
    model_cfg = settings_from_dict(ModelConfig, model_settings, "model")
    train_cfg = settings_from_dict(TrainConfig, train_settings, "train")
    seed_everything(train_cfg.seed)
    if pick_device(train_cfg.device).type == "cpu":
        torch.use_deterministic_algorithms(True)
    train_set = PatchesInMemory(patches, "train", augment=True, seed=train_cfg.seed)
    val_set = PatchesInMemory(patches, "val")
    # One sigmoid output for binary masks; background + one per class (softmax) with labels.classes.
    classes = train_set.classes
    # A contact target has three: background, object, contact (unetseg.data.targets).
    outputs = 1 + len(classes) if classes else 3 if train_set.target == "contact" else 1
    model = UNet(in_channels=train_set.channels, out_channels=outputs, **asdict(model_cfg))
    try:
        model.output_size(train_set.patch_size)
    except ValueError:
        raise InputError(
            f"config 'tile.patch_size' {train_set.patch_size} does not suit a {model_cfg.padding}-padded "
            f"U-Net of depth {model_cfg.depth}; use {model.valid_input_size(train_set.patch_size)}."
        ) from None
    if train_cfg.init_from:
        _initialise_from(model, train_cfg.init_from)
    validator = WholeImageValidator(val_images, border=border) if val_images else None
    trainer = Trainer(model, train_set, val_set, train_cfg, validator=validator)
    if checkpoint:
        trainer.resume(checkpoint, _fingerprint(patches, model_cfg, train_cfg, val_images, border))
    history = trainer.fit()
    threshold, threshold_dice = 0.5, trainer.best_dice
    if validator is not None and outputs == 1:  # tuned on the validation images with the kept weights
        threshold, threshold_dice = best_threshold(*validator.histograms(model, device=str(trainer.device)))
    summary = {
        "best_val_dice": trainer.best_dice,
        "best_epoch": trainer.best_epoch,
        "epochs_run": len(history),
        "seconds": history[-1]["seconds"],
        "device": str(trainer.device),
        "stopped_by": trainer.stopped_by,
        "steps_run": trainer.step,
        "planned_steps": trainer.plan.total_steps,
        "planned_epochs": round(trainer.plan.total_steps / trainer.plan.steps_per_epoch, 3),
        "budget_bound": trainer.plan.budget_bound,
        "replanned_after_first_epoch": trainer.plan.replanned,
        "refitted_to_time": trainer.plan.refitted,
        "measured_step_seconds": trainer.plan.step_seconds,
        "measured_validation_seconds": trainer.plan.validation_seconds,
        "validation": "whole images, tiled inference" if validator else "patches",
        "threshold": threshold,
        "val_dice_at_threshold": threshold_dice,
    }
    full_card = {
        **(card or {}),
        "threshold": threshold,
        "classes": classes,
        # Touching objects were kept apart in training: their instances close the lines again.
        "separated_target": train_set.separated_target,
        "target": train_set.target,
        "model_config": asdict(model_cfg),
        "train_config": asdict(train_cfg),
        "training": summary,
    }
    save_model(model, output, full_card, extra_files={"history.csv": _history_csv(history)})
    if checkpoint:
        Path(checkpoint).unlink(missing_ok=True)
        state_dir = Path(checkpoint).parent
        if state_dir.is_dir() and not any(state_dir.iterdir()):
            state_dir.rmdir()
    return summary
