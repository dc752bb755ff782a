"""The schema is the one source of defaults: the package's settings, the documented keys and
the command-line defaults agree with it, and light commands start without torch."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from unetseg.inference.run import InferenceOptions
from unetseg.plan.rules import AUTO, PLANNED
from unetseg.training.trainer import ModelConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())


def _defaults(section: str) -> dict:
    return {
        key: spec["default"] for key, spec in SCHEMA["properties"][section]["properties"].items() if "default" in spec
    }


def _keys(properties: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, spec in properties.items():
        if spec.get("type") == "object" and "properties" in spec:
            keys += _keys(spec["properties"], f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def test_settings_objects_default_to_the_schema():
    for cls, section in ((ModelConfig, "model"), (TrainConfig, "train")):
        schema = _defaults(section)
        for field in dataclasses.fields(cls):
            if field.name == "augment":
                continue  # a nested section, checked by the schema itself
            if (section, field.name) in PLANNED:  # auto in the schema; the dataclass keeps a fallback
                continue
            assert field.default == schema[field.name], f"{section}.{field.name}"
    inference = _defaults("inference")
    for field in dataclasses.fields(InferenceOptions):
        if field.name in inference:
            assert field.default == inference[field.name], f"inference.{field.name}"


def test_predict_options_default_to_the_schema():
    from unetseg.cli.predict import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--model", "m", "--input", "i.tif", "--output", "o.tif"])
    inference = _defaults("inference")
    for key in ("tile", "batch_size", "border", "device", "tta", "amp", "blend", "overlap", "skip_empty"):
        assert getattr(args, key) == inference[key], f"--{key.replace('_', '-')}"


def test_every_schema_key_is_documented_and_in_the_default_config():
    documented = (REPO / "config/README.md").read_text()
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    for key in _keys(SCHEMA["properties"]):
        leaf = key.split(".")[-1]
        assert f"`{key}`" in documented or f"`{leaf}`" in documented, f"{key} is not in config/README.md"
        node = config
        for part in key.split("."):
            assert part in node, f"{key} is not in config/config.yaml"
            node = node[part]


def test_light_commands_and_the_package_load_neither_torch_nor_dask():
    code = (
        "import sys, unetseg; from unetseg.cli.app import build_parser; build_parser('preprocess');"
        "import unetseg.cli.preprocess, unetseg.workflow.trained, unetseg.batch.manifest;"
        "print(sorted({'torch', 'dask'} & set(sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_report_and_evaluation_commands_do_not_load_torch():
    """The jobs after the segment jobs (pages, evaluation, summary) start in about a second."""
    code = "import sys, unetseg.cli.figure, unetseg.cli.evaluate, unetseg.cli.summarize; print('torch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "False"


def test_every_planned_key_defaults_to_auto_in_the_schema_and_the_config():
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    for path in PLANNED:
        spec, node = SCHEMA["properties"], config
        for part in path[:-1]:
            spec, node = spec[part]["properties"], node[part]
        assert spec[path[-1]]["default"] == AUTO and node[path[-1]] == AUTO, ".".join(path)


def test_border_none_is_refused_where_it_cannot_hold(tmp_path):
    from unetseg.errors import InputError
    from unetseg.workflow.config import check_config

    schema = REPO / "workflow/schemas/config.schema.yaml"
    base = {"dataset": "d", "samples": "s.tsv"}
    check_config({**base, "inference": {"border": "none"}, "model": {"padding": "same"}}, schema)
    with pytest.raises(InputError, match="set inference.border: mirror, or model.padding: same"):
        check_config({**base, "inference": {"border": "none"}, "model": {"padding": "valid"}}, schema)
    with pytest.raises(InputError, match="inference.blend: none"):
        check_config({**base, "inference": {"border": "none", "blend": "gaussian"}}, schema)


def test_config_problems_name_the_config_readme_by_a_path_that_resolves(tmp_path, monkeypatch):
    from unetseg.errors import InputError
    from unetseg.workflow.config import check_config

    monkeypatch.chdir(tmp_path)  # a project directory elsewhere, as with `snakemake -s`
    with pytest.raises(InputError, match="problem") as err:
        check_config({"dataset": "d", "train": {"lerning_rate": 0.1}}, REPO / "workflow/schemas/config.schema.yaml")
    readme = str(err.value).rsplit("keys and defaults: ", 1)[1].rstrip(").")
    assert Path(readme).is_absolute() and Path(readme).is_file(), readme


@pytest.mark.parametrize(
    "path",
    sorted(p.relative_to(REPO).as_posix() for p in [*REPO.glob("config/*.yaml"), *REPO.glob("benchmarks/**/*.yaml")]),
)
def test_every_shipped_config_passes_the_schema_over_the_defaults(path):
    from unetseg.plan.rules import merge  # nested sections merged, as Snakemake merges a --configfile
    from unetseg.workflow.config import check_config

    defaults = yaml.safe_load((REPO / "config/config.yaml").read_text())
    check_config(
        merge(defaults, yaml.safe_load((REPO / path).read_text())), REPO / "workflow/schemas/config.schema.yaml"
    )
