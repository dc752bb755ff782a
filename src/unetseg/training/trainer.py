"""Training: a small trainer (fit / train_epoch / validate / should_stop).

On the CPU, with the same seed, configuration and data, a run that stops on ``epochs``
gives bit-identical weights (``torch.use_deterministic_algorithms``). When ``epochs`` do not
fit in ``max_minutes``, the run plans fewer steps from the step time it measures at the
start and its schedule runs over those (:mod:`unetseg.training.schedule`): where it stops
then depends on the machine, but a resumed run follows the plan of its checkpoint.
"""

from __future__ import annotations

import copy
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from unetseg.data.augment import AugmentConfig, augment_batch
from unetseg.data.patches import ForegroundSampler, PatchDataset
from unetseg.io.files import atomic_path
from unetseg.nn.device import amp_dtype, pick_device
from unetseg.nn.losses import SegmentationLoss
from unetseg.nn.model import UNet
from unetseg.training.schedule import (
    SchedulePlan,
    lr_factor,
    measure_times,
    plan_steps,
    refit_steps,
    replan_steps,
)
from unetseg.training.settings import ModelConfig, TrainConfig, seed_everything, settings_from_dict
from unetseg.training.validation import WholeImageValidator, mean_class_dice

__all__ = ["ModelConfig", "TrainConfig", "Trainer", "seed_everything", "settings_from_dict"]


def _crop_target(target: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    dy, dx = (target.shape[-2] - shape[-2]) // 2, (target.shape[-1] - shape[-1]) // 2
    return target[..., dy : dy + shape[-2], dx : dx + shape[-1]]


class Trainer:
    """Fits a U-Net on a patch store and keeps the weights with the best validation Dice.

    With ``ema`` > 0, an exponential moving average of the weights (and batch-norm
    statistics) follows every step; it is what validation scores and what is kept.

    With ``compile``, training steps run the network through ``torch.compile`` (on CPU and
    CUDA; validation stays eager). Compiling costs its first calls (about a minute on the
    2-core CPU without a cache) and makes each step cheaper
    (``benchmarks/training/compile.py``); where it fails (no C++ compiler, an unsupported
    device), the run warns and trains eagerly.
    """

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
        # Channels-last: cuDNN's and oneDNN's fastest convolutions (a bf16 training step of a
        # depth-4, 16-channel U-Net on 8 patches of 256 px: 0.68 against 0.92 s on 2 CPU cores).
        self.channels_last = self.device.type in ("cuda", "cpu")
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # Mixed precision where the device computes it fast (CUDA; CPUs with native bfloat16).
        self.amp_dtype = amp_dtype(self.device) or torch.float32
        self.amp = config.amp and self.amp_dtype != torch.float32
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.compile = config.compile and self.device.type in ("cpu", "cuda")
        self._compiled: dict[int, Any] = {}  # id(model) -> its compiled module, for training steps
        self._compile_worked = False
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
        self.steps_per_epoch = len(self.train_loader)
        self.ema = None
        if config.ema > 0:
            if not config.ema < 1:
                raise ValueError(f"train.ema must be in [0, 1), not {config.ema}")
            self.ema = AveragedModel(model, multi_avg_fn=self._ema_update, use_buffers=True)
        self.plan: SchedulePlan | None = None  # made by fit() from measured times, or read from a checkpoint
        self.scheduler = self._scheduler(self._epochs_plan())
        self.history: list[dict[str, float]] = []
        self.best_dice, self.best_epoch, self.best_state = -1.0, -1, None
        self.started = time.monotonic()
        self.epoch = 0  # epochs completed
        self.step = 0  # optimiser steps taken
        self.stopped_by = "epochs"
        self.checkpoint_path: Path | None = None
        self.fingerprint = ""
        self.last_checkpoint = time.monotonic()

    @torch.no_grad()
    def _ema_update(self, averaged: list[torch.Tensor], current: list[torch.Tensor], _count) -> None:
        """One step of the weights' moving average (a ``multi_avg_fn`` of ``AveragedModel``).

        The decay warms up as ``min(ema, (1 + step) / (10 + step))``, so the first steps'
        random weights fade quickly; integer buffers (batch counts) are copied.
        """
        if torch.is_floating_point(averaged[0]):
            decay = min(self.config.ema, (1 + self.step) / (10 + self.step))
            torch._foreach_lerp_(averaged, current, 1 - decay)
        else:
            torch._foreach_copy_(averaged, current)

    @property
    def scored_model(self) -> UNet:
        """The weights validation scores and training keeps: the moving average, or the model."""
        return self.model if self.ema is None else self.ema.module

    def _epochs_plan(self, **measured: float) -> SchedulePlan:
        cfg = self.config
        return plan_steps(epochs=cfg.epochs, steps_per_epoch=self.steps_per_epoch, warmup_epochs=cfg.warmup_epochs,
                          **measured)  # fmt: skip

    def _scheduler(self, plan: SchedulePlan, step: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
        """A learning-rate scheduler following ``plan``, at ``step`` (0: a new run)."""
        warmup, total = plan.warmup_steps, plan.total_steps
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, warmup, total),
                                                 last_epoch=step - 1)  # fmt: skip

    def epoch_seconds(self, started: float) -> float:
        """Wall time since ``started`` (a ``time.monotonic()``): the first epoch's, for the replan."""
        return time.monotonic() - started

    def _replan(self, started: float) -> None:
        """After the first epoch: plan the remaining steps again if its time says the plan is off."""
        seconds = self.epoch_seconds(started)
        left = 60 * self.config.max_minutes - (time.monotonic() - self.started)
        plan = replan_steps(self.plan, step=self.step, epochs=self.config.epochs, epoch_seconds=seconds,
                            left_seconds=left)  # fmt: skip
        if plan is None:
            return
        estimate = self.plan.steps_per_epoch * self.plan.step_seconds + self.plan.validation_seconds
        print(
            f"the first epoch took {seconds:.3g} s, not the {estimate:.3g} s measured at the start: planned "
            f"{plan.total_steps} steps instead of {self.plan.total_steps}, the schedule runs over them",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        self.plan, self.scheduler = plan, self._scheduler(plan, self.step)

    def seconds_per_step(self, epochs: int = 5) -> float:
        """Wall time per step over the last ``epochs`` epochs (validations included), from the
        history; 0 before two epochs."""
        if len(self.history) < 2:
            return 0.0
        first, last = self.history[-min(epochs, len(self.history) - 1) - 1], self.history[-1]
        steps = last["step"] - first["step"]
        return (last["seconds"] - first["seconds"]) / steps if steps > 0 else 0.0

    def _refit(self) -> None:
        """After a later epoch: the remaining steps fitted again to the budget left, if off."""
        left = 60 * self.config.max_minutes - (time.monotonic() - self.started)
        rate = self.seconds_per_step()
        plan = refit_steps(self.plan, step=self.step, epochs=self.config.epochs, seconds_per_step=rate,
                           left_seconds=left)  # fmt: skip
        if plan is None:
            return
        print(
            f"training runs at {rate:.3g} s per step with {left:.0f} s of train.max_minutes left: planned "
            f"{plan.total_steps} steps instead of {self.plan.total_steps}, the schedule ends at them",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        self.plan, self.scheduler = plan, self._scheduler(plan, self.step)

    def out_of_time(self) -> bool:
        return time.monotonic() - self.started > 60 * self.config.max_minutes

    def _step_loss(
        self, image: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, model: UNet | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image = image.to(self.device, non_blocking=True)
        mask = mask.to(self.device, non_blocking=True)
        weight = weight.to(self.device, non_blocking=True)
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            logits = (self.model if model is None else model)(image)
        logits = logits.float()
        mask, weight = _crop_target(mask, logits.shape), _crop_target(weight, logits.shape)
        return self.loss_fn(logits, mask, weight), logits

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        self.train_set.set_epoch(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        losses, sizes = [], []  # read once at the end: no wait for the device at every step
        bar = tqdm(self.train_loader, desc=f"epoch {epoch}", leave=False, disable=None, file=sys.stderr)
        for step, batch in enumerate(bar):
            seed = int(np.random.SeedSequence([self.config.seed, epoch, step]).generate_state(1)[0])
            loss = self.optimise(self.model, self.optimizer, self.scaler, batch, seed=seed)
            self.scheduler.step()
            self.step += 1
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            losses.append(loss.detach())
            sizes.append(len(batch[0]))
            if not bar.disable:  # a terminal: show the loss
                bar.set_postfix(loss=f"{loss.item():.4f}")
            if self.step >= self.plan.total_steps or self.out_of_time():
                break
        values = torch.stack(losses).cpu().tolist() if losses else []
        return sum(value * size for value, size in zip(values, sizes)) / max(sum(sizes), 1)

    def optimise(self, model: UNet, optimizer, scaler, batch, *, seed: int) -> torch.Tensor:
        """One optimiser step on ``batch``, augmented with a generator seeded by ``seed``; the loss."""
        image, mask, weight = batch
        if self.augment.elastic or self.augment.intensity or self.augment.rotate or self.augment.scale:
            image, mask, weight = augment_batch(
                image.to(self.device), mask.to(self.device), weight.to(self.device), self.augment,
                generator=torch.Generator().manual_seed(seed),
            )  # fmt: skip
        network = self.network(model)
        try:
            loss = self.backward(network, optimizer, scaler, image, mask, weight)
        except Exception as error:  # compiling failed at its first call: train eagerly
            if network is model or self._compile_worked:
                raise
            print(f"warning: torch.compile failed ({type(error).__name__}: {str(error).strip()[:300]}); "
                  "training without it (train.compile: false hides this)", file=sys.stderr, flush=True)  # fmt: skip
            self.compile = False
            self._compiled.clear()
            loss = self.backward(model, optimizer, scaler, image, mask, weight)
        self._compile_worked = self._compile_worked or network is not model
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        return loss

    def network(self, model: UNet) -> torch.nn.Module:
        """What a training step of ``model`` runs: ``model``, or with ``compile`` its compiled
        module (made once per model; they share the parameters)."""
        if not self.compile:
            return model
        if id(model) not in self._compiled:
            self._compiled[id(model)] = torch.compile(model)
        return self._compiled[id(model)]

    def forget(self, model: UNet) -> None:
        """Drop the compiled module of ``model`` (a scratch copy whose steps are done)."""
        self._compiled.pop(id(model), None)

    def backward(self, network, optimizer, scaler, image, mask, weight) -> torch.Tensor:
        """Forward, loss and backward of ``network`` on a batch (gradients zeroed first); the loss."""
        loss, _ = self._step_loss(image, mask, weight, network)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        return loss

    @torch.inference_mode()
    def validate(self, model: UNet | None = None) -> tuple[float, float]:
        """Validation loss (on the validation patches) and Dice at threshold 0.5: of whole
        validation images through tiled inference with a validator, else of the patches;
        of :attr:`scored_model` unless ``model`` is given."""
        model = self.scored_model if model is None else model
        loss, dice = self._validate_patches(model)
        if self.validator is not None:
            dice = self.validator.score(model, device=str(self.device), amp=self.amp)
        return loss, dice

    def _validate_patches(self, model: UNet) -> tuple[float, float]:
        model.eval()
        total, count = 0.0, 0
        classes = model.settings["out_channels"]
        confusion = torch.zeros(max(classes, 2) ** 2, dtype=torch.int64, device=self.device)
        for image, mask, weight in self.val_loader:
            loss, logits = self._step_loss(image, mask, weight, model)
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
            "step": self.step,
            "plan": self.plan.to_dict() if self.plan else None,
            "elapsed": time.monotonic() - self.started,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
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
        self.step = state.get("step", self.epoch * self.steps_per_epoch)
        self.started = time.monotonic() - state["elapsed"]
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        # a checkpoint of before the plans followed epochs; a new scheduler sets the learning
        # rate of step 0, so it comes before the optimiser's state that holds the current one
        self.plan = SchedulePlan(**state["plan"]) if state.get("plan") else self._epochs_plan()
        self.scheduler = self._scheduler(self.plan)
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
        """Train to the end of the plan (or ``patience``, or the hard stop at ``max_minutes``).

        A new run first measures its step and validation times
        (:func:`~unetseg.training.schedule.measure_times`) and plans
        its steps: ``epochs``, or what fits in what is left of ``max_minutes``
        (:func:`~unetseg.training.schedule.plan_steps`). A resumed run keeps its plan.
        """
        if self.plan is None:
            step_seconds, validation_seconds = measure_times(self)
            left = 60 * self.config.max_minutes - (time.monotonic() - self.started)
            self.plan = self._epochs_plan(budget_seconds=left, step_seconds=step_seconds,
                                          validation_seconds=validation_seconds)  # fmt: skip
            self.scheduler = self._scheduler(self.plan)
            if self.plan.budget_bound:
                print(
                    f"{self.config.epochs} epochs do not fit in train.max_minutes ({self.config.max_minutes}) at "
                    f"{step_seconds:.3g} s per step and {validation_seconds:.3g} s per validation: planned "
                    f"{self.plan.total_steps} steps ({self.plan.total_steps / self.steps_per_epoch:.3g} epochs), "
                    "the learning-rate schedule runs over them", file=sys.stderr, flush=True,
                )  # fmt: skip
        while self.step < self.plan.total_steps and not (self.epoch and self.should_stop(self.epoch)):
            epoch = self.epoch + 1
            started = time.monotonic()
            train_loss = self.train_epoch(epoch)
            val_loss, val_dice = self.validate()
            if val_dice > self.best_dice:
                self.best_dice, self.best_epoch = val_dice, epoch
                state = self.scored_model.state_dict()
                self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in state.items()})
            self.history.append({
                "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_dice": val_dice,
                "lr": self.scheduler.get_last_lr()[0], "seconds": time.monotonic() - self.started,
                "step": self.step,
            })  # fmt: skip
            print(
                f"epoch {epoch}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                f"val Dice {val_dice:.4f} (best {self.best_dice:.4f} at epoch {self.best_epoch})",
                file=sys.stderr, flush=True,
            )  # fmt: skip
            self.epoch = epoch
            if epoch == 1:
                self._replan(started)
            else:
                self._refit()
            self.save_checkpoint()
        if self.plan.budget_bound and self.step >= self.plan.total_steps:
            self.stopped_by = "max_minutes"  # on the steps planned to fit it, annealed
        self.model.load_state_dict(self.best_state)
        return self.history
