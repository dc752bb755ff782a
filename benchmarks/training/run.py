"""Training throughput: the Trainer's patches per second against bare optimiser steps.

On one patch store cut as the workflow's ``tile`` rule cuts it (the demo's data: ``--n-train``
training and 2 validation images of 256x256, 128-pixel patches at half-patch stride, the
border weight map) and one network (the demo's model, ``config/demo.yaml``: depth 3, 16 base
channels), in one process:

(a) bare steps: the same network, AdamW and loss on one fixed batch of ``--batch-size``
    training patches already in memory: zero_grad, forward, loss, backward, optimiser step.
(b) the training loop: :class:`unetseg.training.trainer.Trainer` as ``unetseg train`` builds
    it (augmented patches, whole-image validator, the config's ``train`` section with
    ``--epochs`` and a budget that does not bind), ``fit()`` as it runs.

One step of (a) runs after every optimiser step of (b), timed apart and taken out of (b)'s
time, so both see the same load. Per epoch it gives patches per second of (a), of (b)'s
training steps, and of (b) with its validation, and times the parts of (b)'s step. Each round
runs (b) per ``--variants``: ``memory`` reads the patches as ``unetseg train`` does now,
``zarr`` patch by patch from the store as before. The first epoch of each run is left out
of the medians (first-call costs); the plan's one-off step measurement is reported apart.

Usage, from the repository root::

    .venv/bin/python benchmarks/training/run.py [--rounds 3] [--epochs 4] [--n-train 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODEL = {"depth": 3, "base_channels": 16}
PATCH = 128
WEIGHT_MAP = {"w0": 10, "sigma": 5, "objects": "foreground"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load() -> float:
    return os.getloadavg()[0]


def make_store(work: Path, n_train: int) -> tuple[Path, list[Path]]:
    """The demo's images preprocessed and cut into a patch store, as the workflow does."""
    from unetseg.data.demo import write_demo_dataset
    from unetseg.data.patches import write_patches
    from unetseg.data.preprocess import preprocess_sample

    store = work / f"patches_{n_train}.zarr"
    data = work / f"demo_{n_train}"
    pre = {
        "train": [data / f"train_{i:02d}.zarr" for i in range(n_train)],
        "val": [data / f"val_{i:02d}.zarr" for i in range(2)],
    }
    if store.exists():
        return store, pre["val"]
    write_demo_dataset(data, shape=(256, 256), n_train=n_train, n_val=2, n_test=0, n_predict=0)
    for path in pre["train"] + pre["val"]:
        sample = path.stem
        preprocess_sample(sample, data / f"images/{sample}.tif", path, mask_path=data / f"masks/{sample}.tif")
    write_patches(store, pre, patch_size=PATCH, weight_map=WEIGHT_MAP)
    return store, pre["val"]


def train_settings(epochs: int, batch_size: int) -> dict:
    """The demo's ``train`` section (config/config.yaml with config/demo.yaml over it), with
    ``epochs`` and a budget that does not bind."""
    import yaml

    train = yaml.safe_load((ROOT / "config/config.yaml").read_text())["train"]
    train |= yaml.safe_load((ROOT / "config/demo.yaml").read_text())["train"]
    return {**train, "epochs": epochs, "batch_size": batch_size, "max_minutes": 600, "device": "cpu"}


class BareSteps:
    """(a): forward, backward and optimiser step of the same network on one batch in memory,
    in the precision and memory format the Trainer uses on this device (bfloat16 autocast
    where the CPU computes it natively and ``train.amp`` is on; channels-last)."""

    def __init__(self, store: Path, batch_size: int, settings: dict):
        import torch

        from unetseg.data.patches import PatchDataset
        from unetseg.nn.device import amp_dtype
        from unetseg.nn.losses import SegmentationLoss
        from unetseg.nn.model import UNet

        dataset = PatchDataset(store, "train")
        self.batch = [torch.stack(parts) for parts in zip(*(dataset[i] for i in range(batch_size)))]
        self.batch[0] = self.batch[0].contiguous(memory_format=torch.channels_last)
        self.batch_size = batch_size
        dtype = amp_dtype(torch.device("cpu")) if settings["amp"] else None
        self.autocast = torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None)
        self.precision = str(dtype or torch.float32).removeprefix("torch.")
        with torch.random.fork_rng():
            torch.manual_seed(1)
            self.model = UNet(in_channels=dataset.channels, out_channels=1, **MODEL).train()
        self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=settings["learning_rate"],
                                           weight_decay=settings["weight_decay"])  # fmt: skip
        self.loss_fn = SegmentationLoss(settings["loss"])
        self.run(3)  # warm-up, not timed

    def run(self, steps: int) -> float:
        """Patches per second over ``steps`` steps."""
        image, mask, weight = self.batch
        started = time.perf_counter()
        for _ in range(steps):
            self.optimizer.zero_grad(set_to_none=True)
            with self.autocast:
                logits = self.model(image)
            self.loss_fn(logits.float(), mask, weight).backward()
            self.optimizer.step()
        return steps * self.batch_size / (time.perf_counter() - started)


def training_loop(store: Path, val_images: list[Path], settings: dict, bare: BareSteps, variant: str) -> dict:
    """(b): the Trainer as ``unetseg train`` builds it, ``fit()`` timed epoch by epoch.

    After each optimiser step of the training, one step of (a) runs, timed apart and taken
    out of the epoch's time: each epoch is compared with as many bare steps, interleaved.
    ``variant``: ``memory`` (the patches as ``train_model`` reads them) or ``zarr`` (read
    patch by patch from the store, as before :mod:`unetseg.training.loading`).
    """

    from unetseg.data.patches import PatchDataset
    from unetseg.nn.model import UNet
    from unetseg.training import trainer as trainer_module
    from unetseg.training.loading import PatchesInMemory
    from unetseg.training.trainer import ModelConfig, TrainConfig, Trainer, seed_everything, settings_from_dict
    from unetseg.training.validation import WholeImageValidator

    dataset = {"memory": PatchesInMemory, "zarr": PatchDataset}[variant]
    config = settings_from_dict(TrainConfig, settings, "train")
    seed_everything(config.seed)
    train_set = dataset(store, "train", augment=True, seed=config.seed)
    model = UNet(in_channels=train_set.channels, out_channels=1, **vars(ModelConfig(**MODEL)))
    trainer = Trainer(model, train_set, dataset(store, "val"), config,
                      validator=WholeImageValidator(val_images, border="mirror"))  # fmt: skip
    epochs: list[dict] = []
    parts = ("bare", "between", "augment", "optimise")
    clock = {"mark": 0.0, "measure": 0.0, "steps": 0, "last": None, **dict.fromkeys(parts, 0.0)}
    validate, optimise, measure = trainer.validate, trainer.optimise, trainer_module.measure_times
    augment_batch = trainer_module.augment_batch

    def timed_augment(*args, **kwargs):
        started = time.perf_counter()
        result = augment_batch(*args, **kwargs)
        clock["augment"] += time.perf_counter() - started
        return result

    def interleaved_optimise(model, *args, **kwargs):
        if model is not trainer.model:  # the plan's scratch copy
            return optimise(model, *args, **kwargs)
        started = time.perf_counter()
        if clock["last"] is not None:  # loading the batch, the scheduler, the loop's bookkeeping
            clock["between"] += started - clock["last"]
        loss = optimise(model, *args, **kwargs)
        ended = time.perf_counter()
        clock["optimise"] += ended - started
        bare.run(1)  # one bare step after each step, timed apart
        clock["last"] = time.perf_counter()
        clock["bare"] += clock["last"] - ended
        clock["steps"] += 1
        return loss

    def timed_validate(model=None):
        if model is not None:  # the plan's measurement, on its scratch copy
            return validate(model)
        elapsed = time.perf_counter() - clock["mark"]
        record = {"steps": clock["steps"], "train_seconds": elapsed - clock["bare"], "bare_seconds": clock["bare"]}
        record |= {f"{part}_seconds": clock[part] for part in parts[1:]}
        started = time.perf_counter()
        result = validate()
        record["validation_seconds"] = time.perf_counter() - started
        record["load"] = load()
        epochs.append(record)
        clock.update(mark=time.perf_counter(), steps=0, last=None, **dict.fromkeys(parts, 0.0))
        return result

    def timed_measure(*args, **kwargs):
        started = time.perf_counter()
        result = measure(*args, **kwargs)
        clock["measure"] = time.perf_counter() - started
        clock["mark"] = time.perf_counter()
        return result

    trainer.validate, trainer.optimise = timed_validate, interleaved_optimise
    trainer_module.measure_times, trainer_module.augment_batch = timed_measure, timed_augment
    try:
        history = trainer.fit()
    finally:
        trainer_module.measure_times, trainer_module.augment_batch = measure, augment_batch
    for record in epochs:
        patches = record["steps"] * config.batch_size
        record["patches_per_second"] = patches / record["train_seconds"]
        record["bare_patches_per_second"] = patches / record["bare_seconds"]
        record["patches_per_second_with_validation"] = patches / (
            record["train_seconds"] + record["validation_seconds"]
        )
        record["ratio"] = record["patches_per_second"] / record["bare_patches_per_second"]
        record["ratio_with_validation"] = (
            record["patches_per_second_with_validation"] / record["bare_patches_per_second"]
        )
    return {
        "variant": variant, "epochs": epochs, "measure_seconds": clock["measure"], "steps": trainer.step,
        "final_train_loss": history[-1]["train_loss"], "best_val_dice": trainer.best_dice,
        "weights_sum": float(sum(v.double().sum() for v in trainer.model.state_dict().values())),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of (a) and (b)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of each (b)")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["memory", "zarr"],
        choices=["memory", "zarr"],
        help="how (b) reads patches: memory (as unetseg train) or zarr (patch by patch, as before)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--n-train", type=int, default=8, help="training images of 256x256 (9 patches each)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of both")
    parser.add_argument("--workdir", type=Path, help="patch store directory (default: a new temporary one)")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)  # as unetseg train on the CPU, for (a) too
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_training_"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"patch store in {work}")
    store, val_images = make_store(work, args.n_train)
    settings = train_settings(args.epochs, args.batch_size)
    runs = []
    for r in range(args.rounds):
        bare = BareSteps(store, args.batch_size, settings)
        variants = args.variants if r % 2 == 0 else args.variants[::-1]
        for variant in variants:
            result = training_loop(store, val_images, settings, bare, variant)
            result["round"] = r + 1
            runs.append(result)
            ratios = ", ".join(f"{e['ratio']:.3f}" for e in result["epochs"])
            log(f"round {r + 1} {variant}: epoch ratios {ratios}, load {load():.1f}")

    steps = runs[0]["epochs"][1]["steps"] if len(runs[0]["epochs"]) > 1 else runs[0]["steps"]
    print(f"\nPyTorch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; depth {MODEL['depth']}, {MODEL['base_channels']} base channels, "
          f"{PATCH}-px patches, batch {args.batch_size}, {args.epochs} epochs of {steps} steps per run, "
          f"{bare.precision} autocast, channels-last\n")  # fmt: skip
    print("| round | patches | epoch | load (1 min) | (a) bare patches/s | (b) loop patches/s | ratio | "
          "(b) with validation | ratio with validation |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in runs:
        for e, record in enumerate(run["epochs"], 1):
            print(f"| {run['round']} | {run['variant']} | {e} | {record['load']:.1f} | "
                  f"{record['bare_patches_per_second']:.1f} | {record['patches_per_second']:.1f} | "
                  f"{record['ratio']:.3f} | {record['patches_per_second_with_validation']:.1f} | "
                  f"{record['ratio_with_validation']:.3f} |")  # fmt: skip
    print("\n| patches | epochs | median ratio | median ratio with validation | plan measurement s (median) | "
          "same weights in every round |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    summary = {}
    for variant in args.variants:
        mine = [run for run in runs if run["variant"] == variant]
        records = [record for run in mine for record in run["epochs"][1:]]  # epoch 1 pays first-call costs
        summary[variant] = {
            "median_ratio": statistics.median(r["ratio"] for r in records),
            "median_ratio_with_validation": statistics.median(r["ratio_with_validation"] for r in records),
            "measure_seconds": statistics.median(run["measure_seconds"] for run in mine),
            "same_weights": len({run["weights_sum"] for run in mine}) == 1,
        }
        row = summary[variant]
        print(f"| {variant} | {len(records)} | {row['median_ratio']:.3f} | {row['median_ratio_with_validation']:.3f} | "
              f"{row['measure_seconds']:.1f} | {row['same_weights']} |")  # fmt: skip
    print("\n| patches | bare step | loop step | of which: optimiser step (augmentation included) | augmentation | "
          "between steps (batch loading, scheduler) | rest of the epoch | validation per epoch |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for variant in args.variants:
        records = [record for run in runs if run["variant"] == variant for record in run["epochs"][1:]]
        for r in records:
            r["rest_seconds"] = r["train_seconds"] - r["optimise_seconds"] - r["between_seconds"]

        def ms(key: str, per_epoch: bool = False, records: list = records) -> str:
            return f"{1000 * statistics.median(r[key] / (1 if per_epoch else r['steps']) for r in records):.0f} ms"

        print(f"| {variant} | {ms('bare_seconds')} | {ms('train_seconds')} | {ms('optimise_seconds')} | "
              f"{ms('augment_seconds')} | {ms('between_seconds')} | {ms('rest_seconds')} | "
              f"{ms('validation_seconds', True)} |")  # fmt: skip
    if len({run["weights_sum"] for run in runs}) == 1:
        print("\nevery run (every variant, every round) ended with the same weights (sum of all parameters)")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs,
                                         "summary": summary, "torch": torch.__version__}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
