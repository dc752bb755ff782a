"""Training settings: the config's ``model`` and ``train`` sections as dataclasses, and seeding."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from unetseg.errors import InputError

__all__ = ["ModelConfig", "TrainConfig", "seed_everything", "settings_from_dict"]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture options of :class:`~unetseg.model.UNet` (see there)."""

    depth: int = 4
    base_channels: int = 64
    padding: str = "same"
    batch_norm: bool = True
    dropout: float = 0.0
    upsampling: str = "transpose"


@dataclass(frozen=True)
class TrainConfig:
    """Training options; the config's ``train`` section, see config/README.md."""

    epochs: int = 100
    max_minutes: float = 60.0
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    loss: str = "bce_dice"
    patience: int = 0
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    amp: bool = True
    checkpoint_minutes: float = 5.0
    foreground_share: float = 0.0
    ema: float = 0.0
    compile: bool = False
    augment: dict = field(default_factory=dict)
    init_from: str = ""


def settings_from_dict(cls: type, values: dict[str, Any], section: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"config '{section}': unknown key(s) {unknown}; known keys: {sorted(known)}")
    return cls(**values)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
