"""Losses: binary cross-entropy / cross-entropy, soft Dice, and their sum."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SegmentationLoss", "soft_dice_loss"]

LOSSES = ("bce", "dice", "bce_dice")


def _probabilities_and_onehot(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.shape[1] == 1:
        return torch.sigmoid(logits), target.unsqueeze(1).float()
    onehot = F.one_hot(target.long(), logits.shape[1]).permute(0, 3, 1, 2).float()
    return torch.softmax(logits, dim=1), onehot


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice, computed over the whole batch per class and averaged over classes.

    Parameters
    ----------
    logits : (N, K, Y, X) tensor
        K = 1: binary (sigmoid); K > 1: classes (softmax).
    target : (N, Y, X) tensor
        0/1 for binary, class indices for K > 1.
    eps : float
        Smoothing, so that an empty target and an empty prediction give a loss of 0.
    """
    probs, onehot = _probabilities_and_onehot(logits, target)
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * intersection + eps) / (total + eps)).mean()


class SegmentationLoss(nn.Module):
    """``"bce"`` (cross-entropy for K > 1), ``"dice"`` (soft Dice) or ``"bce_dice"`` (sum)."""

    def __init__(self, kind: str = "bce_dice"):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, not {kind!r}")
        self.kind = kind

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of ``(N, K, Y, X)`` logits against ``(N, Y, X)`` targets.

        ``weight`` ``(N, Y, X)`` scales the per-pixel cross-entropy (the U-Net paper's
        weight map); the Dice term is not weighted.
        """
        loss = logits.new_zeros(())
        if self.kind in ("bce", "bce_dice"):
            if logits.shape[1] == 1:
                pixels = F.binary_cross_entropy_with_logits(logits[:, 0], target.float(), reduction="none")
            else:
                pixels = F.cross_entropy(logits, target.long(), reduction="none")
            loss = loss + (pixels if weight is None else pixels * weight).mean()
        if self.kind in ("dice", "bce_dice"):
            loss = loss + soft_dice_loss(logits, target)
        return loss
