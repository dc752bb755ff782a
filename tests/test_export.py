"""bioimage.io export: the official validator passes offline, bioimage.io software predicts
what unetseg predicts, a package imports back to the same model, and bad input fails in one line."""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import subprocess
import sys
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from unetseg.cli.export import add_arguments, run
from unetseg.data.demo import synthetic_nuclei
from unetseg.data.normalize import normalize, percentile_stats
from unetseg.errors import InputError
from unetseg.export.bioimageio import geometry
from unetseg.export.unpack import open_exported
from unetseg.inference.forward import Forward
from unetseg.inference.predictor import TiledPredictor
from unetseg.io.images import ImageSource
from unetseg.nn.model import UNet
from unetseg.nn.modelcard import load_model, save_model

pytest.importorskip("bioimageio.core")

PERCENTILES = [1.0, 99.8]
SOFTWARE_URL = "https://example.org/unetseg"  # never contacted: the tests run without network

# torch 2.9+ deprecates TorchScript; bioimageio.core's torchscript backend still loads the
# package's TorchScript weights with torch.jit.load (TorchScript is what deepImageJ runs).
TORCHSCRIPT_LOAD = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No network, as on CI: every HTTP request that bioimageio makes fails at once.

    bioimageio.spec's switch for remote checks, ``perform_io_checks``
    (``BIOIMAGEIO_PERFORM_IO_CHECKS``), is forced on by ``bioimageio test``, which must read
    the package's files; for our packages its only remote check is a HEAD request for the
    cited URL, which it records as unreachable, without failing, when offline.
    """
    import httpx

    def offline(*args, **kwargs):
        raise httpx.ConnectError("no network in the test suite")

    for name in ("request", "stream", "get", "head", "post", "put"):
        monkeypatch.setattr(httpx, name, offline)


@pytest.fixture(autouse=True)
def keep_torch_determinism():
    """bioimageio.core's test switches torch's deterministic algorithms off globally: restore."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def tiny_model(directory: Path, *, padding: str = "same", seed: int = 0) -> Path:
    """A random depth-2 U-Net with trained-looking batch norm, saved with a full card."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = UNet(depth=2, base_channels=4, padding=padding)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) * 0.2 - 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    card = {
        "normalization": {"method": "percentile", "percentiles": PERCENTILES},
        "threshold": 0.45,
        "labels": {"foreground": "nonzero"},
        "data": {
            "dataset": "demo",
            "train": ["train_00"],
            "val": ["val_00"],
            "files": {"train_00": ["data/images/train_00.tif", "data/masks/train_00.tif"]},
        },  # fmt: skip
        "model_config": {"depth": 2, "base_channels": 4, "padding": padding},
        "training": {
            "best_val_dice": 0.81,
            "best_epoch": 3,
            "epochs_run": 5,
            "threshold": 0.45,
            "val_dice_at_threshold": 0.82,
        },  # fmt: skip
        "provenance": {"inputs": {"train_00": {"data/images/train_00.tif": "ab" * 32}}},
    }
    save_model(model.eval(), directory, card, extra_files={"history.csv": b"epoch,loss\n1,0.5\n"})
    return directory


def export(*argv: str) -> Path:
    """``unetseg export ARGV`` through the command's own parser."""
    parser = argparse.ArgumentParser(prog="unetseg export")
    add_arguments(parser)
    args = parser.parse_args(list(argv))
    run(args)
    return Path(args.output)


def package_file(package: Path, name: str) -> bytes:
    with zipfile.ZipFile(package) as archive:
        return archive.read(name)


def description(package: Path) -> dict:
    with zipfile.ZipFile(package) as archive:
        rdf = next(n for n in archive.namelist() if n in ("bioimageio.yaml", "rdf.yaml"))
        return yaml.safe_load(archive.read(rdf))


def unetseg_probabilities(model_dir: Path, raw: np.ndarray) -> tuple[np.ndarray, TiledPredictor, np.ndarray]:
    """unetseg's normalised input, predictor and whole-image probabilities for ``raw`` (C, Y, X)."""
    stats = percentile_stats(ImageSource(raw, "CYX"), *PERCENTILES)
    normalized = normalize(raw, stats)
    predictor = TiledPredictor(load_model(model_dir), tile=32, device="cpu")
    return normalized, predictor, predictor.predict_whole(normalized)


@contextmanager
def bioimageio_files():
    """bioimageio.spec 0.5.12 leaves the files it reads open for the garbage collector
    (get_reader); their ResourceWarnings are expected inside its calls, and collected here
    rather than in a later test. Our own code is never inside this block."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield
        finally:
            gc.collect()


def core_prediction(package: Path, raw: np.ndarray, **kwargs) -> np.ndarray:
    """bioimageio.core's probabilities for the input ``raw`` of the package, as an array."""
    from bioimageio.core import create_prediction_pipeline, predict
    from bioimageio.spec import load_model_description

    weight_format, blocks = kwargs.pop("weight_format", None), kwargs.pop("blocksize_parameter", None)

    def run_pipeline() -> np.ndarray:  # leaves no bioimageio object behind for the collector
        descr = load_model_description(str(package))
        pipeline = create_prediction_pipeline(descr, weight_format=weight_format, devices=["cpu"])
        sample = predict(model=pipeline, inputs=raw, blocksize_parameter=blocks, **kwargs)  # loads and unloads it
        return sample.members["probabilities"].data.to_numpy().copy()

    with bioimageio_files():
        return run_pipeline()


def validator_summary(package: Path, **kwargs):
    """``bioimageio test PACKAGE``: the function behind the command."""
    from bioimageio.core import test_model

    with bioimageio_files():
        summary = test_model(str(package), **kwargs)
    failed = [d.name for d in summary.details if d.status == "failed"]
    return summary, failed


@pytest.fixture(scope="module")
def same_package(tmp_path_factory):
    """A same-padded model exported with a real (TIFF) sample image of odd size."""
    root = tmp_path_factory.mktemp("export")
    model_dir = tiny_model(root / "model")
    image, _ = synthetic_nuclei((150, 141), rng=np.random.default_rng(7))
    tifffile.imwrite(root / "val_00.tif", image)
    package = export("--model", str(model_dir), "--output", str(root / "nuclei.zip"), "--sample-image",
                     str(root / "val_00.tif"), "--author", "A. Scientist", "--software-url", SOFTWARE_URL)  # fmt: skip
    return model_dir, package


# --- the package ----------------------------------------------------------------------------


def test_package_describes_the_model(same_package):
    model_dir, package = same_package
    rdf = description(package)
    fits = geometry(load_model(model_dir))
    assert rdf["format_version"].startswith("0.5") and rdf["type"] == "model" and rdf["license"] == "MIT"
    (raw,), (out,) = rdf["inputs"], rdf["outputs"]
    assert [a.get("id", a["type"]) for a in raw["axes"]] == ["batch", "channel", "y", "x"]
    assert [a.get("id", a["type"]) for a in out["axes"]] == ["batch", "channel", "y", "x"]
    assert raw["axes"][2]["size"] == {"min": 2 * fits.halo + 4, "step": 4} and fits.halo % 4 == 0
    assert out["axes"][2]["halo"] == fits.halo == TiledPredictor(load_model(model_dir)).halo
    assert out["axes"][2]["size"] == {"tensor_id": "raw", "axis_id": "y"}
    assert raw["pad"] == {"mode": "reflect"}  # unetseg's mirror border
    scale = next(p for p in raw["preprocessing"] if p["id"] == "scale_range")["kwargs"]
    assert (scale["min_percentile"], scale["max_percentile"], scale["axes"]) == (1.0, 99.8, ["y", "x"])
    assert [p["id"] for p in out["postprocessing"]][0] == "sigmoid"
    weights = rdf["weights"]
    assert weights["pytorch_state_dict"]["architecture"] == {
        "callable": "UNet", "import_from": "unetseg.nn.model",
        "kwargs": {k: v for k, v in json.loads((model_dir / "card.json").read_text())["architecture"].items()
                   if k != "name"},
    }  # fmt: skip
    assert "torchscript" in weights
    assert package_file(package, weights["pytorch_state_dict"]["source"]) == (model_dir / "weights.pt").read_bytes()
    cites = {c.get("doi") or c.get("url") for c in rdf["cite"]}
    assert cites == {"10.1007/978-3-319-24574-4_28", SOFTWARE_URL}
    assert [a["source"] for a in rdf["attachments"]] == ["card.json", "history.csv"]
    assert package_file(package, "card.json") == (model_dir / "card.json").read_bytes()
    readme = package_file(package, rdf["documentation"]["source"]).decode()
    for text in ("val_00.tif", "0.81", "ab" * 32, "threshold", "scale_range", "## Validation", "halo"):
        assert text in readme
    assert "synthetic" not in readme.lower()
    test_input = np.load(io.BytesIO(package_file(package, raw["test_tensor"]["source"])))
    assert test_input.shape == (1, 1, 140, 140)  # the largest multiple of 2^depth in 141, centred
    assert rdf["covers"] and package_file(package, rdf["covers"][0]["source"]).startswith(b"\x89PNG")


@TORCHSCRIPT_LOAD
def test_official_validator_passes_offline(same_package, capsys):
    _, package = same_package
    summary, failed = validator_summary(package)
    with capsys.disabled():
        print(f"\nbioimageio test {package.name}: {summary.status} ({summary.format_version}, "
              f"{sum(d.status == 'passed' for d in summary.details)} checks passed)")  # fmt: skip
    assert summary.status == "passed", summary.format()
    assert not failed
    reproduced = {
        d.loc[-1] for d in summary.details if d.name.startswith("Reproduce test outputs") and d.status == "passed"
    }
    assert reproduced == {"pytorch_state_dict", "torchscript"}


def test_bioimageio_command_passes_offline(same_package, tmp_path):
    """The command line as bioimage.io users run it, in a process whose every HTTP request
    goes to a closed local port (a proxy at 127.0.0.1:9), i.e. offline."""
    command = Path(sys.executable).with_name("bioimageio")
    if not command.exists():
        pytest.skip("no bioimageio command beside this Python")
    _, package = same_package
    offline = {name: "http://127.0.0.1:9" for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
    env = {**os.environ, **offline, "BIOIMAGEIO_CACHE_PATH": str(tmp_path / "cache"), "TQDM_DISABLE": "1"}
    env.pop("NO_PROXY", None)
    result = subprocess.run(
        [str(command), "test", str(package), "--summary", str(tmp_path / "summary.json")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "passed"
    assert not [d["name"] for d in summary["details"] if d["status"] == "failed"]


@TORCHSCRIPT_LOAD
@pytest.mark.parametrize("weight_format", ["pytorch_state_dict", "torchscript"])
def test_package_predicts_what_unetseg_predicts(same_package, weight_format, capsys):
    """bioimageio.core, tiling as consumers do (blocks with the halo, mirrored borders, the
    percentiles of the whole image), gives unetseg's probabilities to 1e-4."""
    model_dir, package = same_package
    raw = np.load(io.BytesIO(package_file(package, "test_input.npy")))
    expected = np.load(io.BytesIO(package_file(package, "test_output.npy")))
    normalized, predictor, whole = unetseg_probabilities(model_dir, raw[0])
    tiled = np.zeros_like(whole)[np.newaxis]
    predictor.predict(ImageSource(normalized, "CYX"), tiled, progress=False)
    assert np.abs(tiled[0] - whole).max() < 1e-5
    # the test output is one pass of the whole test input: its inside is unetseg's prediction
    inner = (slice(None), slice(predictor.halo, -predictor.halo), slice(predictor.halo, -predictor.halo))
    assert np.abs(expected[0][inner] - whole[inner]).max() < 1e-5
    assert np.abs(expected[0] - Forward(load_model(model_dir), device="cpu")(normalized[np.newaxis])[0]).max() < 1e-6

    worst = 0.0
    for n in (7, 20):  # blocks of 80 and 132 pixels, 32 and 84 of them kept (the halo is 24)
        probabilities = core_prediction(package, raw, weight_format=weight_format, blocksize_parameter=n)
        assert probabilities.shape == (1, *whole.shape)
        worst = max(worst, float(np.abs(probabilities[0] - whole).max()))
    with capsys.disabled():
        print(f"\nmax |bioimageio.core ({weight_format}, tiled) - unetseg| = {worst:.2e}")
    assert worst < 1e-4


def test_cli_messages(same_package, capsys, tmp_path):
    model_dir, _ = same_package
    export("--model", str(model_dir), "--output", str(tmp_path / "m.zip"), "--software-url", SOFTWARE_URL)
    assert "bioimageio test" in capsys.readouterr().err
    rdf = description(tmp_path / "m.zip")
    readme = package_file(tmp_path / "m.zip", rdf["documentation"]["source"]).decode()
    assert "synthetic" in readme and "--sample-image" in readme
    assert rdf["config"]["unetseg"]["test_image"] == "synthetic"
    assert rdf["authors"] == []


# --- valid padding ----------------------------------------------------------------------------


@TORCHSCRIPT_LOAD
def test_valid_padding_package(tmp_path):
    """The paper's unpadded U-Net: the output is 2 * margin smaller (size offset), the
    validator passes, and bioimageio.core's prediction is unetseg's inside the margin."""
    model_dir = tiny_model(tmp_path / "model", padding="valid", seed=3)
    package = export("--model", str(model_dir), "--output", str(tmp_path / "valid.zip"),
                     "--software-url", SOFTWARE_URL)  # fmt: skip
    model = load_model(model_dir)
    margin = model.margin
    rdf = description(package)
    (raw_descr,), (out_descr,) = rdf["inputs"], rdf["outputs"]
    assert raw_descr["axes"][3]["size"] == {"min": model.valid_input_size(1), "step": model.grid}
    assert out_descr["axes"][3]["size"] == {"tensor_id": "raw", "axis_id": "x", "offset": -2 * margin}
    assert "halo" not in out_descr["axes"][3]

    summary, failed = validator_summary(package)
    assert summary.status == "passed" and not failed, summary.format()

    raw = np.load(io.BytesIO(package_file(package, "test_input.npy")))
    _, _, whole = unetseg_probabilities(model_dir, raw[0])
    assert margin % model.grid == 0  # so the pooling grid of the two agrees (20 at depth 2)
    probabilities = core_prediction(package, raw)
    inner = (slice(None), slice(margin, -margin), slice(margin, -margin))
    assert probabilities.shape[2:] == whole[inner].shape[1:]
    assert np.abs(probabilities[0] - whole[inner]).max() < 1e-4


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_described_sizes_are_the_sizes_the_network_takes(depth, padding):
    """Every ``min + n * step`` is an input the U-Net takes, with the output size described
    (same: the input's; valid: 2 * margin less); the halo covers the receptive field."""
    model = UNet(depth=depth, base_channels=2, padding=padding)
    fits = geometry(model)
    assert fits.step == 2**depth
    for n in range(6):
        size = fits.min + n * fits.step
        assert model.output_size(size) == size - 2 * fits.margin > 0
    if padding == "same":
        assert fits.halo >= model.receptive_field_radius() and fits.halo % fits.step == 0
        assert fits.min - 2 * fits.halo == fits.step  # the spec wants something left inside the halo
    else:
        assert fits.halo == 0 and fits.min == model.valid_input_size(1)

        def takes(size: int) -> bool:
            try:
                return model.output_size(size) > 0
            except ValueError:
                return False

        assert not any(takes(size) for size in range(1, fits.min))  # min is the smallest input
    assert fits.largest(fits.min - 1) is None and fits.accepts(fits.largest(fits.min + 3 * fits.step + 1))
    assert fits.smallest(1) == fits.min and fits.accepts(fits.smallest(fits.min + 1))


@pytest.mark.slow
@TORCHSCRIPT_LOAD
@pytest.mark.parametrize(
    "target, names",
    [(None, ["class0", "class1", "class2"]), ("contact", ["background", "object", "contact"])],
)
def test_multichannel_multiclass_package(tmp_path, target, names):
    """Two input channels, three classes (or a contact model's three outputs): softmax over
    the channel axis, the channels named, validator passes."""
    torch.manual_seed(2)
    model = UNet(in_channels=2, out_channels=3, depth=2, base_channels=4).eval()
    card = {"normalization": {"method": "percentile", "percentiles": [2, 98]}} | ({"target": target} if target else {})
    save_model(model, tmp_path / "model", card)
    package = export("--model", str(tmp_path / "model"), "--output", str(tmp_path / "classes.zip"),
                     "--software-url", SOFTWARE_URL)  # fmt: skip
    rdf = description(package)
    (raw_descr,), (out_descr,) = rdf["inputs"], rdf["outputs"]
    assert raw_descr["axes"][1]["channel_names"] == ["channel0", "channel1"]
    assert out_descr["axes"][1]["channel_names"] == names
    if target == "contact":
        assert "contact" in package_file(package, "README.md").decode()
    assert out_descr["postprocessing"][0] == {"id": "softmax", "kwargs": {"axis": "channel"}}
    expected = np.load(io.BytesIO(package_file(package, "test_output.npy")))
    assert expected.shape[:2] == (1, 3) and np.allclose(expected.sum(axis=1), 1, atol=1e-5)
    summary, failed = validator_summary(package)
    assert summary.status == "passed" and not failed, summary.format()


# --- import -----------------------------------------------------------------------------------


def test_round_trip(same_package, tmp_path):
    model_dir, package = same_package
    copy = tmp_path / "shared" / "nuclei.zip"
    copy.parent.mkdir()
    copy.write_bytes(package.read_bytes())
    imported = open_exported(copy)
    assert imported == copy.with_name("nuclei.zip.model")
    for name in ("card.json", "weights.pt", "history.csv"):
        assert (imported / name).read_bytes() == (model_dir / name).read_bytes()
    x = torch.rand(2, 1, 48, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(load_model(imported)(x), load_model(model_dir)(x))
    stamp = (imported / "weights.pt").stat().st_mtime_ns
    assert open_exported(copy) == imported and (imported / "weights.pt").stat().st_mtime_ns == stamp  # cached
    assert open_exported(model_dir) == model_dir  # a model directory is used as it is
    unzipped = tmp_path / "unzipped"
    with zipfile.ZipFile(copy) as archive:
        archive.extractall(unzipped)
    assert (open_exported(unzipped) / "card.json").read_bytes() == (model_dir / "card.json").read_bytes()


def test_changed_package_is_imported_again(same_package, tmp_path):
    model_dir, package = same_package
    other = tiny_model(tmp_path / "other", seed=5)
    copy = tmp_path / "nuclei.zip"
    copy.write_bytes(package.read_bytes())
    first = open_exported(copy)
    export("--model", str(other), "--output", str(copy), "--software-url", SOFTWARE_URL)
    assert open_exported(copy) == first
    assert (first / "weights.pt").read_bytes() == (other / "weights.pt").read_bytes()


# --- bad input: one line naming the file and what to do ---------------------------------------


def one_line(err: pytest.ExceptionInfo, *words: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_export_of_a_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(InputError) as err:
        export("--model", str(tmp_path / "notes"), "--output", str(tmp_path / "m.zip"))
    one_line(err, str(tmp_path / "notes"), "model directory")
    assert not (tmp_path / "m.zip").exists()


def test_export_to_a_name_without_zip(same_package, tmp_path):
    model_dir, _ = same_package
    with pytest.raises(InputError) as err:
        export("--model", str(model_dir), "--output", str(tmp_path / "model.bioimageio"))
    one_line(err, "model.bioimageio", ".zip", "model.zip")
    assert not list(tmp_path.iterdir())


def test_import_of_a_package_unetseg_did_not_write(same_package, tmp_path):
    _, package = same_package
    rdf = description(package)
    rdf["name"] = "StarDist nuclei"
    rdf["weights"]["pytorch_state_dict"]["architecture"] = {"callable": "StarDist2D", "import_from": "stardist.models",
                                                            "kwargs": {}}  # fmt: skip
    del rdf["config"]["unetseg"]
    foreign = tmp_path / "stardist.zip"
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(foreign, "w") as target:
        for name in source.namelist():
            data = yaml.safe_dump(rdf).encode() if name in ("rdf.yaml", "bioimageio.yaml") else source.read(name)
            target.writestr(name, data)
    with pytest.raises(InputError) as err:
        open_exported(foreign)
    one_line(err, str(foreign), "stardist.models.StarDist2D", "did not export", "train a unetseg model")
    assert not foreign.with_name("stardist.zip.model").exists()


def test_import_of_other_files(tmp_path):
    (tmp_path / "not.zip").write_text("hello")
    with pytest.raises(InputError) as err:
        open_exported(tmp_path / "not.zip")
    one_line(err, "not.zip", "zip")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as archive:
        archive.writestr("readme.txt", "nothing")
    with pytest.raises(InputError) as err:
        open_exported(tmp_path / "empty.zip")
    one_line(err, "empty.zip", "bioimageio.yaml")
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError) as err:
        open_exported(tmp_path / "folder")
    one_line(err, "folder", "model directory")
    with pytest.raises(InputError) as err:
        open_exported(tmp_path / "missing.zip")
    one_line(err, "missing.zip")


def test_sample_image_with_other_channels(same_package, tmp_path):
    model_dir, _ = same_package
    tifffile.imwrite(
        tmp_path / "rgb.tif", np.zeros((3, 64, 64), np.uint8), photometric="minisblack", metadata={"axes": "CYX"}
    )
    with pytest.raises(InputError) as err:
        export("--model", str(model_dir), "--output", str(tmp_path / "m.zip"), "--sample-image",
               str(tmp_path / "rgb.tif"), "--software-url", SOFTWARE_URL)  # fmt: skip
    one_line(err, "rgb.tif", "3 channel(s)", "--sample-image")


# --- ONNX -------------------------------------------------------------------------------------


@pytest.mark.slow
@TORCHSCRIPT_LOAD
# torch.onnx's exporter (torch.export) trips a deprecation inside torch itself.
@pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning")
def test_onnx_weights(same_package, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model_dir, _ = same_package
    package = export("--model", str(model_dir), "--output", str(tmp_path / "onnx.zip"), "--onnx",
                     "--software-url", SOFTWARE_URL)  # fmt: skip
    assert description(package)["weights"]["onnx"]["opset_version"] == 18
    summary, failed = validator_summary(package, weight_format="onnx")
    assert summary.status == "passed" and not failed, summary.format()
