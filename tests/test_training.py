"""Training end to end on tiny data: it learns, saves, reloads and is reproducible."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import unetseg
from unetseg.data.augment import augment
from unetseg.data.patches import PatchDataset, patch_origins
from unetseg.errors import InputError
from unetseg.nn.device import amp_dtype
from unetseg.nn.losses import SegmentationLoss, soft_dice_loss
from unetseg.nn.modelcard import load_model, read_card
from unetseg.training.run import train_model

MODEL = {"depth": 2, "base_channels": 4}
TRAIN = {"epochs": 2, "batch_size": 4, "max_minutes": 5, "seed": 3}


@pytest.fixture
def patches(tiny_patches):
    return tiny_patches


def test_patch_origins_cover_the_axis():
    assert patch_origins(100, 32, 16) == [0, 16, 32, 48, 64, 68]
    assert patch_origins(20, 32, 16) == [0]
    assert patch_origins(32, 32, 16) == [0]


def test_augment_keeps_image_and_mask_aligned(rng):
    image = rng.random((2, 8, 8)).astype(np.float32)
    mask = (image[0] > 0.5).astype(np.uint8)
    for seed in range(8):
        weight = image[1] * 3
        out_image, out_mask, out_weight = augment(image, mask, weight, rng=np.random.default_rng(seed))
        np.testing.assert_array_equal(out_image[0] > 0.5, out_mask.astype(bool))
        np.testing.assert_array_equal(out_image[1] * 3, out_weight)


def test_losses_are_zero_for_perfect_logits_and_positive_otherwise():
    target = torch.zeros(2, 8, 8)
    target[:, 2:5, 2:6] = 1
    perfect = (target * 40 - 20).unsqueeze(1)
    assert soft_dice_loss(perfect, target) < 1e-6
    assert SegmentationLoss("bce_dice")(perfect, target) < 1e-6
    assert SegmentationLoss("bce_dice")(-perfect, target) > 1
    classes = torch.nn.functional.one_hot(target.long(), 2).permute(0, 3, 1, 2).float() * 40
    assert SegmentationLoss("bce_dice")(classes, target) < 1e-6


def test_train_save_reload_and_reproduce(patches, tmp_path):
    summary = train_model(patches, tmp_path / "m1", model_settings=MODEL, train_settings=TRAIN, card={"note": "x"})
    assert summary["epochs_run"] == 2 and summary["stopped_by"] == "epochs"
    card = read_card(tmp_path / "m1")
    assert card["architecture"]["in_channels"] == 1 and card["note"] == "x" and "torch" in card["versions"]
    assert (tmp_path / "m1" / "history.csv").read_text().startswith("epoch,train_loss,val_loss,val_dice")

    model = unetseg.load_model(tmp_path / "m1")
    assert not model.training
    x = PatchDataset(patches, "val")[0][0][None]
    logits = model(x)
    assert logits.shape == (1, 1, 32, 32)

    train_model(patches, tmp_path / "m2", model_settings=MODEL, train_settings=TRAIN)
    first = torch.load(tmp_path / "m1" / "weights.pt", weights_only=True)
    second = torch.load(tmp_path / "m2" / "weights.pt", weights_only=True)
    assert all(torch.equal(first[k], second[k]) for k in first)  # bit-identical on the CPU


def test_training_learns_on_the_demo_patches(patches, tmp_path):
    settings = {**TRAIN, "epochs": 16, "learning_rate": 3e-3}
    summary = train_model(
        patches, tmp_path / "m", model_settings={"depth": 2, "base_channels": 8}, train_settings=settings
    )
    assert summary["best_val_dice"] > 0.7


def test_patch_size_off_the_grid_is_refused(patches, tmp_path):
    with pytest.raises(InputError, match="tile.patch_size"):
        train_model(
            patches,
            tmp_path / "m",
            model_settings={"depth": 3, "base_channels": 2, "padding": "valid"},
            train_settings=TRAIN,
        )


def test_unknown_settings_are_refused(patches, tmp_path):
    with pytest.raises(InputError, match="unknown key"):
        train_model(patches, tmp_path / "m", model_settings=MODEL, train_settings={"epoch": 3})


def test_model_directory_from_another_format_is_refused(patches, tmp_path):
    train_model(patches, tmp_path / "m", model_settings=MODEL, train_settings={**TRAIN, "epochs": 1})
    card_path = tmp_path / "m" / "card.json"
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "format_version": 99}))
    with pytest.raises(InputError, match="format 99"):
        unetseg.load_model(tmp_path / "m")


def test_provenance_records_checksums_and_commit(tmp_path):
    import hashlib
    import subprocess

    from unetseg.report.provenance import collect_provenance, sha256_path

    (tmp_path / "a.tif").write_bytes(b"image bytes")
    (tmp_path / "store.zarr").mkdir()
    (tmp_path / "store.zarr" / "zarr.json").write_text("{}")
    (tmp_path / "sheet.tsv").write_text("sample\n")
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    record = collect_provenance(
        inputs={"s": [str(tmp_path / "a.tif"), ""], "z": [str(tmp_path / "store.zarr")]},
        sample_sheet=str(tmp_path / "sheet.tsv"), workflow_dir=str(tmp_path / "repo"),
    )  # fmt: skip
    assert record["inputs"]["s"] == {str(tmp_path / "a.tif"): hashlib.sha256(b"image bytes").hexdigest()}
    assert record["inputs"]["z"][str(tmp_path / "store.zarr")] == sha256_path(tmp_path / "store.zarr")
    assert record["sample_sheet"]["sha256"] == hashlib.sha256(b"sample\n").hexdigest()
    assert record["git_commit"] is None  # a repository without commits
    assert "torch" in record["versions"]


def one_train_one_val(tmp_path, separate=True, **patch_options):
    """A patch store of one 64x64 demo training image and one validation image (``separate``:
    as :func:`~unetseg.data.preprocess.preprocess_sample`; False gives a binary target)."""
    from unetseg.data.demo import write_demo_dataset
    from unetseg.data.patches import write_patches
    from unetseg.data.preprocess import preprocess_sample

    write_demo_dataset(tmp_path / "data", shape=(64, 64), n_train=1, n_val=1, n_test=0, n_predict=0)
    pre = {}
    for sample in ("train_00", "val_00"):
        pre[sample] = tmp_path / f"{sample}.zarr"
        preprocess_sample(sample, tmp_path / f"data/images/{sample}.tif", pre[sample],
                          mask_path=tmp_path / f"data/masks/{sample}.tif", separate=separate)  # fmt: skip
    store = tmp_path / "patches.zarr"
    write_patches(store, {"train": [pre["train_00"]], "val": [pre["val_00"]]}, patch_size=32, **patch_options)
    return store, pre


def test_weight_map_patches_train_with_the_weighted_loss(tmp_path):
    store, _ = one_train_one_val(tmp_path, weight_map={"w0": 10, "sigma": 5, "objects": "foreground"})
    dataset = PatchDataset(store, "train")
    assert dataset.has_weights
    image, mask, weight = dataset[4]
    assert weight.shape == mask.shape and float(weight.max()) > 2  # borders between touching nuclei
    summary = train_model(store, tmp_path / "m", model_settings=MODEL, train_settings={**TRAIN, "epochs": 1})
    assert summary["epochs_run"] == 1


def test_weighted_loss_scales_the_cross_entropy():
    logits = torch.zeros(1, 1, 4, 4)
    target = torch.ones(1, 4, 4)
    plain = SegmentationLoss("bce")(logits, target)
    assert SegmentationLoss("bce")(logits, target, torch.full((1, 4, 4), 3.0)) == pytest.approx(3 * plain)


def test_whole_image_validation_tunes_the_threshold(tmp_path, monkeypatch):
    """Epochs are scored in the training precision (cheaper), the threshold tuned in float32."""
    from unetseg.training.validation import WholeImageValidator

    calls = []
    histograms = WholeImageValidator.histograms

    def record(self, model, *, device=None, amp=False):
        calls.append(amp)
        return histograms(self, model, device=device, amp=amp)

    monkeypatch.setattr(WholeImageValidator, "histograms", record)
    store, pre = one_train_one_val(tmp_path, separate=False)  # one sigmoid output: a threshold to tune
    summary = train_model(store, tmp_path / "m", model_settings=MODEL, train_settings={**TRAIN, "epochs": 2},
                          val_images=[pre["val_00"]])  # fmt: skip
    card = read_card(tmp_path / "m")
    assert summary["validation"] == "whole images, tiled inference"
    assert card["threshold"] == summary["threshold"] and 0 <= card["threshold"] < 1
    trains_in = amp_dtype(torch.device("cpu")) is not None  # train.amp on by default
    assert calls == [trains_in] * (len(calls) - 1) + [False] and len(calls) >= 3  # timing, 2 epochs, tuning
    if not trains_in:  # same precision: tuning never loses
        assert summary["val_dice_at_threshold"] >= summary["best_val_dice"] - 1e-12


def test_training_with_augmentation_and_foreground_sampling_is_reproducible(patches, tmp_path):
    settings = {**TRAIN, "epochs": 2, "foreground_share": 0.5, "augment": {"elastic": True, "intensity": True}}
    train_model(patches, tmp_path / "a", model_settings=MODEL, train_settings=settings)
    train_model(patches, tmp_path / "b", model_settings=MODEL, train_settings=settings)
    first = torch.load(tmp_path / "a" / "weights.pt", weights_only=True)
    second = torch.load(tmp_path / "b" / "weights.pt", weights_only=True)
    assert all(torch.equal(first[k], second[k]) for k in first)
    with pytest.raises(InputError, match="train.augment"):
        train_model(patches, tmp_path / "c", model_settings=MODEL, train_settings={**TRAIN, "augment": {"elastik": 1}})


def test_moving_average_of_the_weights_is_what_training_keeps(patches, tmp_path, monkeypatch):
    """train.ema: the kept weights are the average of every step's weights, by its recurrence."""
    from unetseg.training.trainer import Trainer

    snapshots = []
    optimise = Trainer.optimise

    def record(self, model, *args, **kwargs):
        loss = optimise(self, model, *args, **kwargs)
        if model is self.model:  # not the scratch copy that measures the step time
            snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return loss

    monkeypatch.setattr(Trainer, "optimise", record)
    train = {"epochs": 1, "batch_size": 4, "ema": 0.8}
    train_model(patches, tmp_path / "m", model_settings={"depth": 2, "base_channels": 4}, train_settings=train)
    kept = load_model(tmp_path / "m").state_dict()
    assert len(snapshots) == 4  # 18 patches in batches of 4
    expected = {k: v.clone() for k, v in snapshots[0].items()}  # the first step is copied
    for step, weights in enumerate(snapshots[1:], start=2):
        decay = min(0.8, (1 + step) / (10 + step))
        for k, v in weights.items():
            if v.is_floating_point():
                expected[k] = decay * expected[k] + (1 - decay) * v
            else:
                expected[k] = v
    for k in expected:
        torch.testing.assert_close(kept[k], expected[k])
    assert not torch.equal(kept["head.weight"], snapshots[-1]["head.weight"])  # not the last step's weights


def test_time_budget_stops_training_and_says_so(patches, tmp_path):
    summary = train_model(patches, tmp_path / "m", model_settings=MODEL,
                          train_settings={**TRAIN, "epochs": 50, "max_minutes": 1e-4})  # fmt: skip
    assert summary["stopped_by"] == "max_minutes" and summary["epochs_run"] == 1
    assert (tmp_path / "m" / "weights.pt").is_file()  # the best (only) checkpoint is kept


def test_valid_padding_patches_tile_the_image_with_mirrored_context(tmp_path):
    import tifffile

    from unetseg.data.patches import write_patches
    from unetseg.data.preprocess import preprocess_sample

    image = np.arange(40 * 40, dtype=np.uint16).reshape(40, 40)
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "mask.tif", (image % 3 == 0).astype(np.uint8))
    preprocess_sample("s", tmp_path / "img.tif", tmp_path / "s.zarr", mask_path=tmp_path / "mask.tif")
    context, patch = 8, 36  # targets of 20 px
    write_patches(tmp_path / "p.zarr", {"train": [tmp_path / "s.zarr"], "val": [tmp_path / "s.zarr"]},
                  patch_size=patch, context=context)  # fmt: skip
    dataset = PatchDataset(tmp_path / "p.zarr", "train")
    import zarr

    index = zarr.open_group(tmp_path / "p.zarr", mode="r")["train"].attrs["index"]
    covered = np.zeros((40, 40), int)
    for i, (_, _, y, x) in enumerate(index):
        _, mask, _ = dataset[i]
        target = mask.numpy()[context : patch - context, context : patch - context]
        np.testing.assert_array_equal(target, (image[y : y + 20, x : x + 20] % 3 == 0))
        covered[y : y + 20, x : x + 20] += 1
    assert (covered > 0).all()  # the network's outputs reach every pixel, borders included
    first = dataset[0][1].numpy()
    np.testing.assert_array_equal(first[:context, context], first[2 * context : context : -1, context])  # mirrored


def test_compiled_training_is_reproducible_and_follows_the_eager_run(patches, tmp_path, monkeypatch):
    """train.compile: the training steps run the compiled module (the model's parameters), two
    runs give the same weights, and they follow the eager run up to float rounding."""
    from unetseg.training.trainer import Trainer

    networks = []
    backward = Trainer.backward

    def record(self, network, *args, **kwargs):
        networks.append(type(network).__name__)
        return backward(self, network, *args, **kwargs)

    monkeypatch.setattr(Trainer, "backward", record)
    compiled = {**TRAIN, "compile": True}
    train_model(patches, tmp_path / "a", model_settings=MODEL, train_settings=compiled)
    assert set(networks) == {"OptimizedModule"}, networks  # the scratch copy's steps and the model's
    train_model(patches, tmp_path / "b", model_settings=MODEL, train_settings=compiled)
    train_model(patches, tmp_path / "eager", model_settings=MODEL, train_settings=TRAIN)
    first, second, eager = (torch.load(tmp_path / n / "weights.pt", weights_only=True) for n in ("a", "b", "eager"))
    assert all(torch.equal(first[k], second[k]) for k in first)
    for k in first:
        torch.testing.assert_close(first[k], eager[k], rtol=1e-3, atol=1e-4)


def test_a_failing_compile_warns_and_trains_eagerly(patches, tmp_path, monkeypatch, capsys):
    class Broken(torch.nn.Module):  # what torch.compile gives where no C++ compiler is found
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            raise RuntimeError("InductorError: CppCompileError: C++ compile error")

    monkeypatch.setattr(torch, "compile", Broken)
    summary = train_model(patches, tmp_path / "m", model_settings=MODEL, train_settings={**TRAIN, "compile": True})
    assert summary["epochs_run"] == 2
    assert "torch.compile failed (RuntimeError: InductorError" in capsys.readouterr().err
    eager = train_model(patches, tmp_path / "eager", model_settings=MODEL, train_settings=TRAIN)
    first = torch.load(tmp_path / "m" / "weights.pt", weights_only=True)
    second = torch.load(tmp_path / "eager" / "weights.pt", weights_only=True)
    assert all(torch.equal(first[k], second[k]) for k in first) and eager["epochs_run"] == 2
