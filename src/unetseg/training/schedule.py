"""The learning-rate schedule and how many optimiser steps a run takes: ``epochs`` or the budget.

A run plans its number of optimiser steps before it trains: ``epochs`` x steps per epoch,
or fewer when those do not fit in ``max_minutes`` at the step and validation times measured
at the start (:meth:`~unetseg.training.trainer.Trainer.measure`). The linear warm-up and
the cosine decay then run over the planned steps, so a run that the budget binds still ends
annealed, and it stops on its step count. The plan is stored in the checkpoint: a resumed
run follows it without measuring again, and ends with the weights the uninterrupted run had.

The measurement takes a few seconds and a shared machine's load can change in them: on the
2-core test machine a step measured at 2.1 s under a short burst of other work ran at 1.3 s,
and the run stopped after 12 of its 20 minutes. So the first epoch's wall time checks the
plan once (:func:`replan_steps`): off by more than :data:`REPLAN_TOLERANCE`, the remaining
steps are planned again from it, the decay stretched or shortened from there on. That plan
too is stored in the checkpoint.

The machine's speed can also change later (other jobs on a shared node): a run whose step
was measured at 0.67 s averaged 0.98 s a step over its 20 minutes and stopped at 1170 of
1478 planned steps, its learning rate still at a tenth of the peak; another slowed by half
for five epochs and then ran at its old speed. So after every later epoch the remaining
steps are fitted again to what is left of the budget at the speed of the last epochs
(:func:`refit_steps`): fewer when they no longer fit, so the decay still reaches zero
inside ``max_minutes``; more when over :data:`REPLAN_TOLERANCE` of the time left would go
unused, but only in the first three quarters of the plan, where stretching the decay
barely raises the learning rate.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

if TYPE_CHECKING:
    from unetseg.training.trainer import Trainer

__all__ = [
    "SchedulePlan",
    "lr_factor",
    "measure_times",
    "plan_steps",
    "replan_steps",
    "refit_steps",
    "PLAN_MARGIN",
    "REPLAN_TOLERANCE",
]

PLAN_MARGIN = 0.95  # share of the remaining budget the planned steps may use (timing noise)
REPLAN_TOLERANCE = 0.15  # the first epoch's time may differ this much from the plan's before it is replanned


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total`` steps.

    ``step`` counts the optimiser steps already taken: the factor for the step about to be
    taken, so step ``total - 1`` (the last) runs at nearly zero and ``total`` at zero.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class SchedulePlan:
    """How many optimiser steps a run takes, and why.

    Attributes
    ----------
    total_steps : int
        Optimiser steps of the whole run; the cosine decay reaches zero there.
    warmup_steps : int
        Steps of linear warm-up.
    steps_per_epoch : int
        Batches of one epoch (the last epoch of a budget-bound run is cut short).
    budget_bound : bool
        True when ``epochs`` x ``steps_per_epoch`` steps did not fit in ``max_minutes``.
    step_seconds, validation_seconds : float
        The measured times the plan was made from (0 when nothing was measured).
    replanned : bool
        True once the first epoch's time has planned the remaining steps again.
    epoch_seconds : float
        That first epoch's wall time (0 before).
    refitted : int
        Times a later epoch fitted the remaining steps to the budget left again
        (:func:`refit_steps`).
    """

    total_steps: int
    warmup_steps: int
    steps_per_epoch: int
    budget_bound: bool = False
    step_seconds: float = 0.0
    validation_seconds: float = 0.0
    replanned: bool = False
    epoch_seconds: float = 0.0
    refitted: int = 0

    @property
    def epochs(self) -> int:
        """Epochs the plan starts (the last may be partial)."""
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _epochs_warmup(warmup_epochs: float, steps_per_epoch: int) -> int:
    return max(1, int(warmup_epochs * steps_per_epoch))


def plan_steps(
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float,
    budget_seconds: float | None = None,
    step_seconds: float = 0.0,
    validation_seconds: float = 0.0,
) -> SchedulePlan:
    """The run's steps: ``epochs`` x ``steps_per_epoch``, or as many as fit in the budget.

    Parameters
    ----------
    epochs, steps_per_epoch : int
        ``train.epochs`` and the batches of one epoch.
    warmup_epochs : float
        ``train.warmup_epochs``. When the budget binds, the warm-up keeps its share of the
        run, ``warmup_epochs / epochs`` of the planned steps (at least one step).
    budget_seconds : float, optional
        What is left of ``train.max_minutes`` when training starts; None: no budget.
    step_seconds, validation_seconds : float
        Measured time of one optimiser step (data loading and augmentation included) and of
        one validation. Each epoch, the last one too, ends with a validation.

    Returns
    -------
    SchedulePlan
        ``PLAN_MARGIN`` of the budget is planned for; at least one step.
    """
    full = epochs * steps_per_epoch
    measured = dict(step_seconds=float(step_seconds), validation_seconds=float(validation_seconds))
    epoch_seconds = steps_per_epoch * step_seconds + validation_seconds
    if budget_seconds is None or full * step_seconds + epochs * validation_seconds <= PLAN_MARGIN * budget_seconds:
        return SchedulePlan(full, _epochs_warmup(warmup_epochs, steps_per_epoch), steps_per_epoch, False, **measured)
    available = max(0.0, PLAN_MARGIN * budget_seconds)
    whole = int(available // epoch_seconds) if epoch_seconds > 0 else epochs
    left = available - whole * epoch_seconds
    extra = int((left - validation_seconds) // step_seconds) if step_seconds > 0 and left > validation_seconds else 0
    total = max(1, min(full, whole * steps_per_epoch + min(extra, steps_per_epoch - 1)))
    if total >= full:  # only rounding kept it out above
        return SchedulePlan(full, _epochs_warmup(warmup_epochs, steps_per_epoch), steps_per_epoch, False, **measured)
    warmup = max(1, int(warmup_epochs * total / epochs))
    return SchedulePlan(total, warmup, steps_per_epoch, True, **measured)


def replan_steps(
    plan: SchedulePlan, *, step: int, epochs: int, epoch_seconds: float, left_seconds: float
) -> SchedulePlan | None:
    """The plan again after the first epoch, from its wall time, or None to keep ``plan``.

    A budget-bound plan is made again when ``epoch_seconds`` differs from the plan's estimate
    (``steps_per_epoch x step_seconds + validation_seconds``) by more than
    :data:`REPLAN_TOLERANCE`; a plan of all ``epochs`` only when they no longer fit. The
    remaining steps are what fits in ``PLAN_MARGIN`` of ``left_seconds`` at the observed time
    per step (its share of the validation included), at most ``epochs`` in all and at least
    the ``step`` already taken; the warm-up is kept. A plan replanned once is kept.
    """
    if plan.replanned or epoch_seconds <= 0 or step >= plan.total_steps:
        return None
    full = epochs * plan.steps_per_epoch
    per_step = epoch_seconds / plan.steps_per_epoch
    total = max(step, min(full, step + int(PLAN_MARGIN * max(0.0, left_seconds) // per_step)))
    estimate = plan.steps_per_epoch * plan.step_seconds + plan.validation_seconds
    if plan.budget_bound and estimate > 0 and abs(epoch_seconds - estimate) <= REPLAN_TOLERANCE * estimate:
        return None
    if not plan.budget_bound and total >= plan.total_steps:  # the epochs still fit
        return None
    if total == plan.total_steps:
        return None
    return SchedulePlan(**{**plan.to_dict(), "total_steps": total, "budget_bound": total < full, "replanned": True,
                           "epoch_seconds": float(epoch_seconds)})  # fmt: skip


LENGTHEN_BEFORE = 0.75  # share of the planned steps after which a plan is no longer lengthened


def refit_steps(
    plan: SchedulePlan, *, step: int, epochs: int, seconds_per_step: float, left_seconds: float
) -> SchedulePlan | None:
    """The remaining steps fitted to the budget left, or None to keep ``plan``.

    ``seconds_per_step`` is the wall time per step of the recent epochs, their validations
    included. When ``total_steps - step`` of them take longer than ``left_seconds``, or
    (before :data:`LENGTHEN_BEFORE` of the plan) less than ``1 - REPLAN_TOLERANCE`` of it,
    the plan keeps what fits in ``PLAN_MARGIN`` of it: at least the ``step`` already taken,
    at most ``epochs`` in all. The warm-up is kept (cut to the total if that is shorter).
    """
    remaining = plan.total_steps - step
    if remaining <= 0 or seconds_per_step <= 0:
        return None
    needed = remaining * seconds_per_step
    too_long = needed > left_seconds
    too_short = needed < (1 - REPLAN_TOLERANCE) * left_seconds and step < LENGTHEN_BEFORE * plan.total_steps
    if not (too_long or too_short):
        return None
    full = epochs * plan.steps_per_epoch
    total = max(step, min(full, step + int(PLAN_MARGIN * max(0.0, left_seconds) // seconds_per_step)))
    if total == plan.total_steps or (too_short and total < plan.total_steps):
        return None
    return SchedulePlan(**{**plan.to_dict(), "total_steps": total, "warmup_steps": min(plan.warmup_steps, max(1, total)),
                           "budget_bound": total < full, "refitted": plan.refitted + 1})  # fmt: skip


def measure_times(
    trainer: Trainer, *, warmup: int = 3, min_steps: int = 5, min_seconds: float = 3.0, max_steps: int = 30
) -> tuple[float, float]:
    """Seconds of one optimiser step and of one validation, measured on a scratch copy.

    Two validations of the copy come first, the second timed; then the copy and a fresh
    optimiser take ``warmup`` untimed steps, then timed steps (batch loading and augmentation
    included, one process) until there are ``min_steps`` and ``min_seconds``, or
    ``max_steps``. The first validation and steps of a process pay one-off costs: on the
    2-core test machine (PyTorch 2.13, CPU), training steps ran 2.5 to 6x slower until a
    first whole-image validation had run (why, we do not know), and the first validation
    took 1.3 to 4x the next. The median step is taken, robust to the odd slow step of a
    shared machine. The model, the optimiser and every random state are left as they were,
    so the measurement does not change what the run learns. With ``train.compile`` the copy's
    warm-up steps compile it, and the timed steps are compiled ones; then one forward and
    backward pass of the trained model compiles its own module (reusing the cached kernels),
    its weights, statistics and gradients put back as they were.

    Returns
    -------
    tuple of float
        ``(step_seconds, validation_seconds)``: the median timed step and the validation.
    """
    model = copy.deepcopy(trainer.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=trainer.config.learning_rate,
                                  weight_decay=trainer.config.weight_decay)  # fmt: skip
    scaler = torch.amp.GradScaler("cuda", enabled=trainer.scaler.is_enabled())
    loader = DataLoader(
        trainer.train_set, batch_size=trainer.config.batch_size, drop_last=trainer.train_loader.drop_last
    )
    cuda = [trainer.device.index or 0] if trainer.device.type == "cuda" else []
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=cuda):
        trainer.validate(model)
        started = time.perf_counter()
        trainer.validate(model)
        validation_seconds = time.perf_counter() - started
        batches = itertools.cycle(loader)
        for step in range(warmup):
            trainer.optimise(model, optimizer, scaler, next(batches), seed=step).item()
        times: list[float] = []
        while len(times) < max_steps and (len(times) < min_steps or sum(times) < min_seconds):
            started = time.perf_counter()
            trainer.optimise(model, optimizer, scaler, next(batches), seed=len(times)).item()  # waits for the device
            times.append(time.perf_counter() - started)
        trainer.forget(model)
        network = trainer.network(trainer.model)
        if network is not trainer.model:  # compile the trained model's module too, outside the epoch's clock
            state = copy.deepcopy(trainer.model.state_dict())  # its batch-norm statistics move
            trainer.model.train()
            trainer.backward(network, trainer.optimizer, trainer.scaler, *next(batches))
            trainer.model.load_state_dict(state)
            trainer.optimizer.zero_grad(set_to_none=True)
    np.random.set_state(np_state)
    random.setstate(py_state)
    return float(np.median(times)), validation_seconds
