"""The plan: fingerprints of the training data, the planning rules on synthetic fingerprints,
and resolving ``auto`` settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from unetseg.data.demo import write_demo_dataset
from unetseg.data.preprocess import preprocess_sample
from unetseg.errors import InputError
from unetseg.nn.model import UNet
from unetseg.plan.fingerprint import compute_fingerprint, data_fingerprint
from unetseg.plan.rules import (
    AUTO,
    MIN_STEPS,
    OVERHEAD,
    PLANNED,
    patch_count,
    plan_settings,
    receptive_field,
    resolve,
    step_limit,
)
from unetseg.plan.run import make_data_plan, make_plan, read_plan

AUTO_CONFIG = {
    "tile": {"patch_size": AUTO, "weight_map": {"enabled": AUTO, "objects": "foreground"}},
    "model": {"depth": AUTO, "base_channels": AUTO, "padding": "same"},
    "train": {"batch_size": AUTO, "epochs": AUTO, "foreground_share": AUTO, "compile": AUTO, "max_minutes": 60},
}


def fingerprint(**changes):
    data = {
        "shapes": [[1024, 1024]] * 20, "min_side": 1024, "object_diameter_p90": 30.0, "instance_ids": True,
        "objects": "foreground", "touching_share": 0.3, "foreground_fraction": 0.25,
    }  # fmt: skip
    return {**data, **changes}


def compute(seconds_per_patch=0.01, device="cuda", widths=(8, 16, 32, 64)):
    """Measured seconds per patch: ``seconds_per_patch`` at 16 channels, the wider ones
    scaled as the square of the width (their arithmetic)."""
    return {"device": device, "seconds_per_patch": {str(w): seconds_per_patch * (w / 16) ** 2 for w in widths}}


def config(**sections):
    merged = json.loads(json.dumps(AUTO_CONFIG))
    for section, values in sections.items():
        merged[section].update(values)
    return merged


def test_receptive_field_formula_is_the_networks():
    for depth in (2, 3, 4, 5):
        low, high = UNet(depth=depth, base_channels=1).receptive_field()
        assert receptive_field(depth) == high - low + 1


@pytest.mark.parametrize(("p90", "depth"), [(20, 3), (50, 3), (60, 4), (100, 4), (150, 5), (float("nan"), 4)])
def test_depth_follows_the_object_size(p90, depth):
    settings, reasons, _ = plan_settings(fingerprint(object_diameter_p90=p90), compute(), config())
    assert settings["model"]["depth"] == depth
    if np.isfinite(p90):
        assert receptive_field(depth) >= 2 * p90 or depth == 5


def test_patch_grows_with_objects_and_stays_inside_the_images():
    small, _, _ = plan_settings(fingerprint(object_diameter_p90=20), compute(), config())
    large, _, _ = plan_settings(fingerprint(object_diameter_p90=100), compute(), config())
    huge, _, _ = plan_settings(fingerprint(object_diameter_p90=300), compute(), config())
    tiny_images, _, _ = plan_settings(fingerprint(min_side=96, shapes=[[96, 96]] * 4), compute(), config())
    # Two 90th-percentile diameters, rounded up to a power of two, within 128..512.
    assert small["tile"]["patch_size"] == 128 and large["tile"]["patch_size"] == 256
    assert huge["tile"]["patch_size"] == 512
    assert (
        tiny_images["tile"]["patch_size"] == 96
        and tiny_images["tile"]["patch_size"] % 2 ** tiny_images["model"]["depth"] == 0
    )


def test_width_and_epochs_follow_the_measured_speed_and_the_budget():
    fast, _, fast_estimates = plan_settings(fingerprint(), compute(0.001), config())
    slow, reasons, estimates = plan_settings(fingerprint(), compute(0.5, "cpu"), config(train={"max_minutes": 20}))
    assert fast["model"]["base_channels"] == 64 and slow["model"]["base_channels"] == 8
    assert "cpu" in reasons["model.base_channels"] and "16 channels 4.00 s" in reasons["model.base_channels"]
    # 16 channels at 0.06 s a patch (0.62 s a step with the overhead): 1923 steps in 20
    # minutes, short of MIN_STEPS; 8 channels (a quarter by arithmetic) reach them.
    settings, _, _ = plan_settings(fingerprint(), compute(0.06, "cpu"), config(train={"max_minutes": 20}))
    assert settings["model"]["base_channels"] == 8
    settings, _, _ = plan_settings(fingerprint(), compute(0.04, "cpu"), config(train={"max_minutes": 20}))
    assert settings["model"]["base_channels"] == 16
    # The budget ends training; the reason gives the epochs estimated to fit.
    fit = int(20 * 60 // estimates["seconds_per_epoch"])
    assert slow["train"]["epochs"] == 300 and f"about {fit} epochs" in reasons["train.epochs"]
    assert fast_estimates["patches_per_epoch"] == patch_count([[1024, 1024]] * 20, 128)


def test_width_follows_each_measured_step_not_the_arithmetic():
    # 32 channels at 1.33x the step of 16 (as wide networks use a CPU better; 4x by
    # arithmetic): 32 fits 2000 steps of 8 patches in 20 minutes (1200 / 2000 / 1.3 =
    # 0.46 s a step), 64 does not.
    measured = {"device": "cpu", "seconds_per_patch": {"16": 0.03, "32": 0.04, "64": 0.12}}
    settings, _, estimates = plan_settings(fingerprint(), measured, config(train={"max_minutes": 20}))
    assert settings["model"]["base_channels"] == 32
    assert estimates["seconds_per_step"] == pytest.approx(0.04 * 8 * OVERHEAD)
    # A width measuring stopped before (too slow) is never chosen; nothing fits: the narrowest.
    stopped = {"device": "cpu", "seconds_per_patch": {"16": 1.0}}
    settings, _, _ = plan_settings(fingerprint(), stopped, config(train={"max_minutes": 20}))
    assert settings["model"]["base_channels"] == 16
    assert step_limit(config(train={"max_minutes": 20})) == pytest.approx(1200 / MIN_STEPS / OVERHEAD)


def test_compute_fingerprint_measures_each_width_until_one_is_too_slow():
    every = compute_fingerprint(device="cpu", depth=2, patch=32, batch=2, widths=(8, 4), steps=1)
    assert list(every["seconds_per_patch"]) == ["4", "8"] and all(s > 0 for s in every["seconds_per_patch"].values())
    assert every["measured_at"] == {"depth": 2, "patch": 32, "batch": 2} and every["device"] == "cpu"
    stopped = compute_fingerprint(device="cpu", depth=2, patch=32, batch=2, widths=(4, 8), steps=1, limit_seconds=0)
    assert list(stopped["seconds_per_patch"]) == ["4"]  # 4 channels exceeded the limit: 8 is not measured


def test_a_width_out_of_memory_ends_the_measurement_and_is_never_chosen(monkeypatch):
    forward = UNet.forward

    def limited(self, x):  # a device whose memory holds 4 and 8 base channels, not 16
        if self.settings["base_channels"] > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, x)

    monkeypatch.setattr(UNet, "forward", limited)
    measured = compute_fingerprint(device="cpu", depth=2, patch=32, batch=2, widths=(4, 8, 16, 32), steps=1)
    assert list(measured["seconds_per_patch"]) == ["4", "8"] and measured["out_of_memory"] == [16]
    settings, reasons, _ = plan_settings(fingerprint(), measured, config(train={"max_minutes": 600}))
    assert settings["model"]["base_channels"] == 8 and "16 channels ran out of memory" in reasons["model.base_channels"]
    # any other error is not taken for a full memory
    monkeypatch.setattr(UNet, "forward", lambda self, x: (_ for _ in ()).throw(RuntimeError("shapes differ")))
    with pytest.raises(RuntimeError, match="shapes differ"):
        compute_fingerprint(device="cpu", depth=2, patch=32, batch=2, widths=(4,), steps=1)


def test_a_patch_no_width_fits_in_memory_is_an_error_before_training(demo_samples, tmp_path, monkeypatch):
    _, paths = demo_samples
    data_plan = make_data_plan(paths[:2], paths[2:], config(), tmp_path / "data.json")

    def full(self, x):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 68719476736 bytes.")

    monkeypatch.setattr(UNet, "forward", full)
    with pytest.raises(InputError, match=r"does not fit in the .* GB of the cpu even at 8 base channels.*batch_size"):
        make_plan(data_plan, config(train={"max_minutes": 5}), tmp_path / "plan.json")
    assert not (tmp_path / "plan.json").exists()


def test_weight_map_batch_and_foreground_sampling_rules():
    touching, _, _ = plan_settings(fingerprint(touching_share=0.3), compute(), config())
    apart, _, _ = plan_settings(fingerprint(touching_share=0.02), compute(), config())
    membranes, _, _ = plan_settings(fingerprint(objects="background"), compute(), config())
    sparse, _, _ = plan_settings(fingerprint(foreground_fraction=0.01, shapes=[[128, 128]]), compute(), config())
    assert touching["tile"]["weight_map"]["enabled"] and not apart["tile"]["weight_map"]["enabled"]
    assert not membranes["tile"]["weight_map"]["enabled"]
    assert sparse["train"]["foreground_share"] == 0.5 and touching["train"]["foreground_share"] == 0.0
    assert sparse["train"]["batch_size"] == 1 and touching["train"]["batch_size"] == 8  # one patch: batch 1


def test_explicit_values_win_and_constrain_the_rest():
    settings, reasons, _ = plan_settings(
        fingerprint(object_diameter_p90=100),
        compute(widths=(8,)),
        config(tile={"patch_size": 64}, model={"base_channels": 8}),
    )
    assert settings["tile"]["patch_size"] == 64 and settings["model"]["base_channels"] == 8
    assert reasons["tile.patch_size"] == reasons["model.base_channels"] == "set in the config"
    assert 64 // 2 ** settings["model"]["depth"] >= 8  # the bottleneck keeps 8 pixels


def test_resolve_replaces_auto_only():
    planned = {"tile": {"patch_size": 256, "weight_map": {"enabled": True}}, "model": {"depth": 4, "base_channels": 32}}
    tile = resolve("tile", {"patch_size": AUTO, "weight_map": {"enabled": AUTO, "w0": 10}}, planned)
    assert tile == {"patch_size": 256, "weight_map": {"enabled": True, "w0": 10}}
    assert resolve("model", {"depth": 3, "base_channels": AUTO}, planned) == {"depth": 3, "base_channels": 32}
    with pytest.raises(ValueError, match="model.depth is 'auto' but no plan gives it"):
        resolve("model", {"depth": AUTO}, None)


@pytest.fixture(scope="module")
def demo_samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    write_demo_dataset(root, shape=(96, 96), n_train=2, n_val=1, n_test=0, n_predict=0)
    paths = []
    for name in ("train_00", "train_01", "val_00"):
        out = root / f"{name}.zarr"
        preprocess_sample(name, root / "images" / f"{name}.tif", out, mask_path=root / "masks" / f"{name}.tif")
        paths.append(out)
    return root, paths


def test_data_fingerprint_measures_objects_and_contacts(demo_samples):
    root, paths = demo_samples
    data = data_fingerprint(paths[:2], paths[2:])
    truth = [tifffile.imread(root / "masks" / f"train_0{i}.tif") for i in (0, 1)]
    assert data["n_train"] == 2 and data["n_val"] == 1 and data["channels"] == [1] and data["min_side"] == 96
    assert data["object_count"] == sum(len(np.unique(t)) - 1 for t in truth)
    diameters = np.concatenate(
        [np.sqrt(4 * np.bincount(t.ravel())[1:][np.bincount(t.ravel())[1:] > 0] / np.pi) for t in truth]
    )
    assert data["object_diameter_p90"] == pytest.approx(np.percentile(diameters, 90))
    assert 0 < data["touching_share"] < 1 and data["instance_ids"] is True


def test_the_two_stages_write_reusable_plans(demo_samples, tmp_path):
    _, paths = demo_samples
    settings = config(train={"max_minutes": 5}, model={"base_channels": 4})
    first = make_data_plan(paths[:2], paths[2:], settings, tmp_path / "data.json")
    assert read_plan(tmp_path / "data.json") == json.loads(json.dumps(first))
    assert first["settings"]["tile"]["patch_size"] == 96  # the images are smaller than 128 px
    assert set(first["settings"]) == {"tile", "model"} and "base_channels" not in first["settings"]["model"]
    plan = make_plan(first, settings, tmp_path / "plan.json")
    assert plan["settings"]["model"] == {"depth": first["settings"]["model"]["depth"], "base_channels": 4}
    assert list(plan["compute"]["seconds_per_patch"]) == ["4"]  # the configured width only
    assert plan["compute"]["measured_at"]["patch"] == 96 and set(plan["reasons"]) == {".".join(p) for p in PLANNED}
    with pytest.raises(InputError, match="too short for one epoch"):
        make_plan(first, config(train={"max_minutes": 1e-6}), tmp_path / "short.json")
    assert not (tmp_path / "short.json").exists()
    with pytest.raises(InputError, match="fewer than a quarter of one 512 px patch"):
        make_data_plan(paths[:1], [], config(tile={"patch_size": 512}), tmp_path / "small.json")


def test_a_membrane_network_counts_its_cells_as_the_objects(tmp_path):
    membranes = np.zeros((96, 96), np.uint8)
    membranes[::24, :] = membranes[:, ::24] = 1  # a grid of one-pixel membranes: 16 cells
    tifffile.imwrite(tmp_path / "image.tif", membranes * 200 + 20)
    tifffile.imwrite(tmp_path / "mask.tif", membranes)
    preprocess_sample("m", tmp_path / "image.tif", tmp_path / "m.zarr", mask_path=tmp_path / "mask.tif")
    data = data_fingerprint([tmp_path / "m.zarr"])
    assert data["objects"] == "background" and data["object_count"] == 16
    assert data["object_diameter_median"] == pytest.approx(np.sqrt(4 * 23 * 23 / np.pi))


def test_compute_fingerprint_times_the_configured_network(monkeypatch):
    built = []
    init = UNet.__init__

    def record(self, **kwargs):
        built.append(kwargs)
        init(self, **kwargs)

    monkeypatch.setattr(UNet, "__init__", record)
    measured = compute_fingerprint(
        device="cpu", depth=1, patch=20, batch=1, widths=(2,), steps=1,
        model={"batch_norm": False, "padding": "valid", "upsampling": "bilinear", "depth": "auto"},
    )  # fmt: skip
    timed = built[-1]
    assert timed["batch_norm"] is False and timed["padding"] == "valid" and timed["upsampling"] == "bilinear"
    assert timed["base_channels"] == 2 and timed["depth"] == 1 and list(measured["seconds_per_patch"]) == ["2"]


def test_compile_rule_follows_the_budget_the_device_and_a_cpp_compiler(monkeypatch):
    import unetseg.plan.rules as rules

    def compiled(device="cpu", **train):
        settings, reasons, _ = plan_settings(fingerprint(), compute(0.001, device), config(train=train))
        return settings["train"]["compile"], reasons["train.compile"]

    shortest = rules.COMPILE_MINUTES
    monkeypatch.setattr(rules.shutil, "which", lambda name: f"/usr/bin/{name}")
    on, reason = compiled(max_minutes=shortest)
    assert on is True and reason.endswith(f"cpu, {shortest} min")
    assert compiled(max_minutes=shortest - 1)[0] is False and compiled("cuda", max_minutes=shortest)[0] is True
    assert compiled("mps", max_minutes=60)[0] is False
    assert compiled(max_minutes=60, compile=False) == (False, "set in the config")
    monkeypatch.setattr(rules.shutil, "which", lambda name: None)  # the CPU kernels need a C++ compiler
    off, reason = compiled(max_minutes=60)
    assert off is False and "without a C++ compiler" in reason
    assert compiled("cuda", max_minutes=60)[0] is True
    assert resolve("train", {"compile": AUTO}, {"train": {"compile": True}}) == {"compile": True}
