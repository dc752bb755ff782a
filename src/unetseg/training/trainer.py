"""Training: a small trainer (fit / train_epoch / validate / should_stop) and its settings.

On the CPU, with the same seed, configuration and data, a run that stops on ``epochs``
gives bit-identical weights (``torch.use_deterministic_algorithms``). A run cut short by
``max_minutes`` keeps its best checkpoint, but where it stops depends on the machine.
"""

from __future__ import annotations

import copy
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from unetseg.data.augment import AugmentConfig, augment_batch
from unetseg.data.patches import ForegroundSampler, PatchDataset
from unetseg.errors import InputError
from unetseg.io.files import atomic_path
from unetseg.nn.device import pick_device
from unetseg.nn.losses import SegmentationLoss
from unetseg.nn.model import UNet
from unetseg.training.validation import WholeImageValidator, mean_class_dice

__all__ = ["ModelConfig", "TrainConfig", "Trainer", "seed_everything", "settings_from_dict"]


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


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to zero at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))


def _crop_target(target: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    dy, dx = (target.shape[-2] - shape[-2]) // 2, (target.shape[-1] - shape[-1]) // 2
    return target[..., dy : dy + shape[-2], dx : dx + shape[-1]]


class Trainer:
    """Fits a U-Net on a patch store and keeps the weights with the best validation Dice."""

    def __init__(
        self,
        model: UNet,
        train_set: PatchDataset,
        val_set: PatchDataset,
        config: TrainConfig,
        *,
        validator: WholeImageValidator | None = None,
    ):
        self.config, self.model, self.validator = config, model, validator
        self.augment = settings_from_dict(AugmentConfig, config.augment, "train.augment")
        self.device = pick_device(config.device)
        self.model.to(self.device)
        cuda = self.device.type == "cuda"
        if cuda:
            self.model.to(memory_format=torch.channels_last)
        self.amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
        self.amp = config.amp and cuda
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.train_set, self.val_set = train_set, val_set
        loader = dict(num_workers=config.num_workers, pin_memory=cuda, persistent_workers=config.num_workers > 0)
        self.sampler = None
        if config.foreground_share > 0:
            self.sampler = ForegroundSampler(train_set.has_foreground, config.foreground_share, seed=config.seed)
        self.train_loader = DataLoader(
            train_set, batch_size=config.batch_size, shuffle=self.sampler is None, sampler=self.sampler,
            drop_last=len(train_set) > config.batch_size, generator=torch.Generator().manual_seed(config.seed),
            **loader,
        )  # fmt: skip
        self.val_loader = DataLoader(val_set, batch_size=config.batch_size, **loader)
        self.loss_fn = SegmentationLoss(config.loss)
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        total = config.epochs * len(self.train_loader)
        warmup = max(1, int(config.warmup_epochs * len(self.train_loader)))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: _lr_factor(s, warmup, total))
        self.history: list[dict[str, float]] = []
        self.best_dice, self.best_epoch, self.best_state = -1.0, -1, None
        self.started = time.monotonic()
        self.epoch = 0  # epochs completed
        self.stopped_by = "epochs"
        self.checkpoint_path: Path | None = None
        self.fingerprint = ""
        self.last_checkpoint = time.monotonic()

    def out_of_time(self) -> bool:
        return time.monotonic() - self.started > 60 * self.config.max_minutes

    def _step_loss(
        self, image: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image = image.to(self.device, non_blocking=True)
        mask = mask.to(self.device, non_blocking=True)
        weight = weight.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            image = image.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            logits = self.model(image)
        logits = logits.float()
        mask, weight = _crop_target(mask, logits.shape), _crop_target(weight, logits.shape)
        return self.loss_fn(logits, mask, weight), logits

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        self.train_set.set_epoch(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        total, count = 0.0, 0
        bar = tqdm(self.train_loader, desc=f"epoch {epoch}", leave=False, disable=None, file=sys.stderr)
        for step, (image, mask, weight) in enumerate(bar):
            if self.augment.elastic or self.augment.intensity:
                seed = int(np.random.SeedSequence([self.config.seed, epoch, step]).generate_state(1)[0])
                image, mask, weight = augment_batch(
                    image.to(self.device), mask.to(self.device), weight.to(self.device), self.augment,
                    generator=torch.Generator().manual_seed(seed),
                )  # fmt: skip
            loss, _ = self._step_loss(image, mask, weight)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            total += loss.item() * len(image)
            count += len(image)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if self.out_of_time():
                break
        return total / max(count, 1)

    @torch.inference_mode()
    def validate(self) -> tuple[float, float]:
        """Validation loss (on the validation patches) and Dice at threshold 0.5: of whole
        validation images through tiled inference with a validator, else of the patches."""
        loss, dice = self._validate_patches()
        if self.validator is not None:
            dice = self.validator.score(self.model, device=str(self.device))
        return loss, dice

    def _validate_patches(self) -> tuple[float, float]:
        self.model.eval()
        total, count = 0.0, 0
        classes = self.model.settings["out_channels"]
        confusion = torch.zeros(max(classes, 2) ** 2, dtype=torch.int64, device=self.device)
        for image, mask, weight in self.val_loader:
            loss, logits = self._step_loss(image, mask, weight)
            total += loss.item() * len(image)
            count += len(image)
            truth = _crop_target(mask.to(self.device), logits.shape).long()
            pred = (logits[:, 0] > 0).long() if classes == 1 else logits.argmax(1)
            truth = (truth > 0).long() if classes == 1 else truth
            confusion += torch.bincount((truth * max(classes, 2) + pred).ravel(), minlength=confusion.numel())
        side = max(classes, 2)
        return total / max(count, 1), mean_class_dice(confusion.cpu().numpy().reshape(side, side))

    def should_stop(self, epoch: int) -> bool:
        patience = self.config.patience
        if patience and epoch - self.best_epoch >= patience:
            self.stopped_by = "patience"
            return True
        if self.out_of_time():
            self.stopped_by = "max_minutes"
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where training stands (tensors, plain types)."""
        np_state = np.random.get_state()
        return {
            "fingerprint": self.fingerprint,
            "epoch": self.epoch,
            "elapsed": time.monotonic() - self.started,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": self.history,
            "best": {"dice": self.best_dice, "epoch": self.best_epoch, "state": self.best_state},
            "rng": {
                "torch": torch.get_rng_state(),
                "loader": self.train_loader.generator.get_state(),
                "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
                "python": random.getstate(),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = state["epoch"]
        self.started = time.monotonic() - state["elapsed"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history = state["history"]
        best = state["best"]
        self.best_dice, self.best_epoch, self.best_state = best["dice"], best["epoch"], best["state"]
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        self.train_loader.generator.set_state(rng["loader"])
        kind, keys, *rest = rng["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))

    def resume(self, path: str | os.PathLike, fingerprint: str) -> bool:
        """Continue from the checkpoint at ``path`` if it belongs to this run; checkpoint there."""
        self.checkpoint_path, self.fingerprint = Path(path), fingerprint
        if not self.checkpoint_path.is_file():
            return False
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") != fingerprint:
            print(f"ignoring checkpoint {path}: it is from another configuration or data", file=sys.stderr)
            return False
        self.load_state_dict(state)
        print(f"resumed from checkpoint {path} after epoch {self.epoch}", file=sys.stderr, flush=True)
        return True

    def save_checkpoint(self, *, force: bool = False) -> None:
        minutes = self.config.checkpoint_minutes
        if self.checkpoint_path is None or not (force or time.monotonic() - self.last_checkpoint >= 60 * minutes):
            return
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(self.state_dict(), tmp)
        self.last_checkpoint = time.monotonic()

    def fit(self) -> list[dict[str, float]]:
        while self.epoch < self.config.epochs and not (self.epoch and self.should_stop(self.epoch)):
            epoch = self.epoch + 1
            train_loss = self.train_epoch(epoch)
            val_loss, val_dice = self.validate()
            if val_dice > self.best_dice:
                self.best_dice, self.best_epoch = val_dice, epoch
                self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
            self.history.append({
                "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_dice": val_dice,
                "lr": self.scheduler.get_last_lr()[0], "seconds": time.monotonic() - self.started,
            })  # fmt: skip
            print(
                f"epoch {epoch}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                f"val Dice {val_dice:.4f} (best {self.best_dice:.4f} at epoch {self.best_epoch})",
                file=sys.stderr, flush=True,
            )  # fmt: skip
            self.epoch = epoch
            self.save_checkpoint()
        self.model.load_state_dict(self.best_state)
        return self.history
