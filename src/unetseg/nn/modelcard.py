"""A trained model as a self-describing directory: ``weights.pt`` plus ``card.json``.

The card holds everything needed to rebuild and use the network: its architecture, the
normalisation its inputs need, the probability threshold, the training configuration and
data, and the versions that produced it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from unetseg.io.files import atomic_path
from unetseg.nn.card import CARD, FORMAT_VERSION, WEIGHTS, environment_versions, read_card
from unetseg.nn.model import UNet

__all__ = ["save_model", "load_model", "read_card", "environment_versions"]  # card readers re-exported


def save_model(
    model: UNet,
    directory: str | os.PathLike,
    card: dict[str, Any],
    *,
    extra_files: dict[str, bytes] | None = None,
) -> None:
    """Write weights and card into ``directory``, atomically (all or nothing)."""
    full_card = {
        "format_version": FORMAT_VERSION,
        "architecture": {"name": "UNet", **model.settings},
        **card,
        "versions": environment_versions(),
    }
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp / WEIGHTS)
        (tmp / CARD).write_text(json.dumps(full_card, indent=2) + "\n")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)


def load_model(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> UNet:
    """Rebuild a trained U-Net from its directory; returned in eval mode.

    ``model(x)`` takes ``(N, C, Y, X)`` float input normalised as ``card["normalization"]``
    says and returns logits ``(N, classes, Y, X)``.
    """
    card = read_card(directory)
    settings = {k: v for k, v in card["architecture"].items() if k != "name"}
    model = UNet(**settings)
    state = torch.load(Path(directory) / WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()
