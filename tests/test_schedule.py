"""Schedules on the budget: the planned steps, annealing when max_minutes binds, resuming a plan."""

from __future__ import annotations

import csv

import pytest
import torch

from unetseg.nn.modelcard import read_card
from unetseg.training import trainer as trainer_module
from unetseg.training.run import train_model
from unetseg.training.schedule import (
    PLAN_MARGIN,
    REPLAN_TOLERANCE,
    SchedulePlan,
    lr_factor,
    plan_steps,
    refit_steps,
    replan_steps,
)
from unetseg.training.trainer import Trainer

MODEL = {"depth": 2, "base_channels": 4}
# tiny_patches: 18 training patches, batches of 4 -> 4 steps per epoch; 10 epochs = 40 steps.
# With a step of 1 s and a validation of 2 s (faked below), an epoch costs 6 s: the budget
# fits 2 epochs (12 s), then 3 steps and the last validation (5 s), with 0.5 s to spare.
FAKE_TIMES = (1.0, 2.0)
BUDGET_MINUTES = (12 + 5 + 0.5) / PLAN_MARGIN / 60
TRAIN = {"epochs": 10, "batch_size": 4, "seed": 4, "max_minutes": BUDGET_MINUTES, "checkpoint_minutes": 0}


def test_plan_follows_epochs_when_they_fit_the_budget():
    plan = plan_steps(epochs=10, steps_per_epoch=100, warmup_epochs=1.5, budget_seconds=1000,
                      step_seconds=0.5, validation_seconds=20)  # fmt: skip
    assert (plan.total_steps, plan.warmup_steps, plan.budget_bound, plan.epochs) == (1000, 150, False, 10)
    unmeasured = plan_steps(epochs=10, steps_per_epoch=100, warmup_epochs=1.5)
    assert (unmeasured.total_steps, unmeasured.warmup_steps, unmeasured.budget_bound) == (1000, 150, False)


def test_plan_fits_the_budget_with_a_validation_per_epoch():
    # 95% of 500 s = 475 s: 4 epochs of 100 x 1 s + 10 s, then 25 steps and a last validation
    plan = plan_steps(epochs=10, steps_per_epoch=100, warmup_epochs=1.0, budget_seconds=500,
                      step_seconds=1.0, validation_seconds=10.0)  # fmt: skip
    assert (plan.total_steps, plan.warmup_steps, plan.budget_bound, plan.epochs) == (425, 42, True, 5)
    late = plan_steps(epochs=10, steps_per_epoch=100, warmup_epochs=1.0, budget_seconds=-5,
                      step_seconds=1.0, validation_seconds=10.0)  # fmt: skip
    assert late.total_steps == 1 and late.budget_bound  # at least one step, even out of time


@pytest.mark.parametrize("warmup, total", [(1, 11), (42, 425), (150, 1000)])
def test_schedule_ends_at_the_minimum_learning_rate(warmup, total):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total))
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert max(rates) == pytest.approx(0.5) and rates.index(max(rates)) == warmup - 1
    decay = rates[warmup:]  # (step warmup runs at the peak too)
    assert all(a > b for a, b in zip(decay, decay[1:]))  # cosine decay over the planned steps
    assert scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)  # at zero when they are done


def test_measurement_leaves_the_model_and_random_states_alone(tiny_patches):
    from unetseg.data.patches import PatchDataset
    from unetseg.nn.model import UNet
    from unetseg.training.schedule import measure_times
    from unetseg.training.settings import TrainConfig

    torch.manual_seed(0)
    model = UNet(in_channels=1, out_channels=1, **MODEL)
    trainer = Trainer(model, PatchDataset(tiny_patches, "train", augment=True), PatchDataset(tiny_patches, "val"),
                      TrainConfig(batch_size=4, device="cpu"))  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    step_seconds, validation_seconds = measure_times(trainer, min_seconds=0.0, max_steps=3)
    assert step_seconds > 0 and validation_seconds > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state()) and not trainer.optimizer.state


def fake_measurement(monkeypatch, times=FAKE_TIMES, epoch=None, rate=0.0):
    """A machine as slow as ``times`` says: the measurement, and the first epoch's time that
    checks it (``epoch``, default 4 steps and a validation at those times); later epochs
    run at ``rate`` seconds per step (0: unknown, so the plan is not fitted again)."""
    calls = []
    monkeypatch.setattr(Trainer, "seconds_per_step", lambda self, epochs=5: rate)

    def measure(trainer):
        calls.append(trainer)
        return times

    monkeypatch.setattr(trainer_module, "measure_times", measure)
    seconds = 4 * times[0] + times[1] if epoch is None else epoch
    monkeypatch.setattr(Trainer, "epoch_seconds", lambda self, started: seconds)
    return calls


def history(directory):
    with open(directory / "history.csv") as file:
        return list(csv.DictReader(file))


def test_budget_bound_run_ends_annealed_and_records_its_plan(tiny_patches, tmp_path, monkeypatch):
    calls = fake_measurement(monkeypatch)
    summary = train_model(tiny_patches, tmp_path / "m", model_settings=MODEL, train_settings=TRAIN)
    assert len(calls) == 1
    assert summary["budget_bound"] and summary["planned_steps"] == summary["steps_run"] == 11
    assert summary["stopped_by"] == "max_minutes" and summary["epochs_run"] == 3
    assert summary["planned_epochs"] == 2.75 and summary["measured_step_seconds"] == 1.0
    rows = history(tmp_path / "m")
    assert [int(row["step"]) for row in rows] == [4, 8, 11]  # the last epoch cut at the planned step
    assert float(rows[-1]["lr"]) == 0.0 and float(rows[0]["lr"]) > 0  # annealed
    assert read_card(tmp_path / "m")["training"]["planned_steps"] == 11


def test_epochs_that_fit_keep_their_schedule(tiny_patches, tmp_path, monkeypatch):
    fake_measurement(monkeypatch, times=(1e-3, 1e-3))
    summary = train_model(tiny_patches, tmp_path / "m", model_settings=MODEL, train_settings={**TRAIN, "epochs": 2})
    assert not summary["budget_bound"] and summary["planned_steps"] == summary["steps_run"] == 8
    assert summary["stopped_by"] == "epochs"


@pytest.mark.parametrize("ema", [0.0, 0.9], ids=["weights", "moving-average"])
def test_resumed_run_keeps_the_plan_of_its_checkpoint(tiny_patches, tmp_path, monkeypatch, ema):
    fake_measurement(monkeypatch)
    settings = {**TRAIN, "ema": ema}
    train_model(tiny_patches, tmp_path / "reference", model_settings=MODEL, train_settings=settings)

    class Killed(Exception):
        pass

    save = Trainer.save_checkpoint

    def save_then_die(self, *, force=False):
        save(self, force=force)
        if self.epoch == 2:
            raise Killed

    checkpoint = tmp_path / "state" / "checkpoint.pt"
    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        train_model(tiny_patches, tmp_path / "m", model_settings=MODEL, train_settings=settings, checkpoint=checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    assert state["plan"]["total_steps"] == 11 and state["plan"]["budget_bound"] and state["step"] == 8
    assert (state["ema"] is not None) == (ema > 0)

    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    calls = fake_measurement(monkeypatch, times=(1e-3, 1e-3))  # would plan all 40 steps if asked
    summary = train_model(tiny_patches, tmp_path / "m", model_settings=MODEL, train_settings=settings,
                          checkpoint=checkpoint)  # fmt: skip
    assert calls == [] and summary["steps_run"] == 11  # not measured again: the stored plan
    reference = torch.load(tmp_path / "reference" / "weights.pt", weights_only=True)
    resumed = torch.load(tmp_path / "m" / "weights.pt", weights_only=True)
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    assert [row["lr"] for row in history(tmp_path / "m")] == [row["lr"] for row in history(tmp_path / "reference")]


def test_replan_follows_the_first_epoch_when_the_measurement_was_off():
    plan = plan_steps(epochs=10, steps_per_epoch=4, warmup_epochs=1.0, budget_seconds=100, step_seconds=4.0,
                      validation_seconds=4.0)  # fmt: skip
    assert plan.budget_bound and plan.total_steps == 18  # 20 s an epoch: 4 epochs, 2 steps and a validation in 95 s
    near = 20 * (1 + REPLAN_TOLERANCE / 2)
    assert replan_steps(plan, step=4, epochs=10, epoch_seconds=near, left_seconds=80) is None  # within tolerance
    faster = replan_steps(plan, step=4, epochs=10, epoch_seconds=10, left_seconds=90)  # twice as fast
    assert faster.replanned and faster.total_steps == 4 + int(0.95 * 90 // 2.5) == 38 and faster.budget_bound
    assert faster.warmup_steps == plan.warmup_steps and faster.epoch_seconds == 10
    assert replan_steps(faster, step=8, epochs=10, epoch_seconds=1, left_seconds=80) is None  # once only
    fast = replan_steps(plan, step=4, epochs=10, epoch_seconds=1, left_seconds=90)
    assert fast.total_steps == 40 and not fast.budget_bound  # every epoch fits now
    slower = replan_steps(plan, step=4, epochs=10, epoch_seconds=40, left_seconds=60)
    assert slower.total_steps == 4 + int(0.95 * 60 // 10) == 9
    fits = plan_steps(epochs=2, steps_per_epoch=4, warmup_epochs=1.0, budget_seconds=100, step_seconds=1.0,
                      validation_seconds=1.0)  # fmt: skip
    assert replan_steps(fits, step=4, epochs=2, epoch_seconds=3, left_seconds=90) is None  # the epochs fit
    late = replan_steps(fits, step=4, epochs=2, epoch_seconds=60, left_seconds=10)
    assert late.total_steps == 4 and late.budget_bound  # no time for another step: stop after this epoch
    assert SchedulePlan(**late.to_dict()) == late  # stored in the checkpoint as a dict


def test_later_epochs_fit_the_remaining_steps_to_the_budget_left():
    plan = plan_steps(epochs=10, steps_per_epoch=100, warmup_epochs=1.0, budget_seconds=1000, step_seconds=1.0,
                      validation_seconds=10.0)  # fmt: skip
    assert plan.total_steps == 860 and plan.budget_bound
    kw = dict(epochs=10)
    assert refit_steps(plan, step=300, seconds_per_step=1.1, left_seconds=650, **kw) is None  # 560 steps: 616 of 650 s
    slow = refit_steps(plan, step=300, seconds_per_step=1.5, left_seconds=650, **kw)  # 560 steps would take 840 s
    assert slow.total_steps == 300 + int(0.95 * 650 // 1.5) == 711 and slow.refitted == 1 and slow.budget_bound
    assert (slow.warmup_steps, slow.replanned, slow.step_seconds) == (plan.warmup_steps, False, 1.0)
    # back at full speed: 311 steps would use 311 of 600 s, so more are planned
    fast = refit_steps(slow, step=400, seconds_per_step=1.0, left_seconds=600, **kw)
    assert fast.total_steps == 400 + int(0.95 * 600 // 1.0) == 970 and fast.refitted == 2
    assert refit_steps(slow, step=400, seconds_per_step=0.9, left_seconds=320, **kw) is None  # 280 of 320 s: kept
    assert refit_steps(slow, step=600, seconds_per_step=0.1, left_seconds=600, **kw) is None  # late: not lengthened
    again = refit_steps(slow, step=600, seconds_per_step=3.0, left_seconds=300, **kw)  # late: still shortened
    assert again.total_steps == 695 and again.refitted == 2
    assert refit_steps(again, step=690, seconds_per_step=3.0, left_seconds=-5, **kw).total_steps == 690  # out of time
    most = refit_steps(plan, step=300, seconds_per_step=0.01, left_seconds=650, **kw)
    assert most.total_steps == 1000 and not most.budget_bound  # at most the epochs
    fits = plan_steps(epochs=2, steps_per_epoch=4, warmup_epochs=1.0)  # epochs, no budget measured
    late = refit_steps(fits, step=4, epochs=2, seconds_per_step=10.0, left_seconds=25)
    assert late.total_steps == 6 and late.budget_bound  # epochs that fitted at the start but no longer do
    assert refit_steps(fits, step=4, epochs=2, seconds_per_step=0.0, left_seconds=25) is None  # nothing measured
    assert SchedulePlan(**again.to_dict()) == again


def test_a_run_that_slows_down_is_shortened_and_ends_annealed(tiny_patches, tmp_path, monkeypatch):
    fake_measurement(monkeypatch, rate=10.0)  # planned 11 steps; the first epoch as measured, then 10 s a step
    summary = train_model(tiny_patches, tmp_path / "m", model_settings=MODEL, train_settings=TRAIN)
    # after epoch 2 (step 8), about 17 s are left: 3 more steps would take 30 s, 1 fits
    assert summary["planned_steps"] == summary["steps_run"] == 9 and summary["refitted_to_time"] == 1
    rows = history(tmp_path / "m")
    assert [int(row["step"]) for row in rows] == [4, 8, 9] and float(rows[-1]["lr"]) == 0.0
    assert not summary["replanned_after_first_epoch"]


def test_a_run_that_speeds_up_is_lengthened_and_ends_annealed(tiny_patches, tmp_path, monkeypatch):
    fake_measurement(monkeypatch, rate=0.01)  # planned 11 steps; after the first epoch, 0.01 s a step
    summary = train_model(tiny_patches, tmp_path / "m", model_settings=MODEL, train_settings=TRAIN)
    assert summary["planned_steps"] == summary["steps_run"] == 40 and summary["refitted_to_time"] == 1
    assert not summary["budget_bound"] and summary["stopped_by"] == "epochs"  # every epoch fits now
    rows = history(tmp_path / "m")
    assert len(rows) == 10 and float(rows[-1]["lr"]) == 0.0


def test_a_run_faster_than_its_measurement_is_replanned_and_ends_annealed(tiny_patches, tmp_path, monkeypatch):
    fake_measurement(monkeypatch, epoch=0.6)  # measured 6 s an epoch, ran 0.6 s
    summary = train_model(tiny_patches, tmp_path / "m", model_settings=MODEL, train_settings=TRAIN)
    assert summary["planned_steps"] == summary["steps_run"] == 40 and not summary["budget_bound"]
    rows = history(tmp_path / "m")
    assert float(rows[-1]["lr"]) == 0.0 and len(rows) == 10
