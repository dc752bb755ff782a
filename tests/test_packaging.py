"""environment.yml mirrors pyproject.toml; the console script and the public API exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

import unetseg

REPO = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # conda-forge's name for the same package


def requirement(text: str) -> tuple[str, str]:
    name, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", text.strip()).groups()
    return name.lower(), spec.replace(" ", "")


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = dict(map(requirement, project["dependencies"] + project["optional-dependencies"]["test"]))
    wanted = {CONDA_NAMES.get(name, name): spec for name, spec in wanted.items()}
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = dict(requirement(d) for d in environment["dependencies"] if isinstance(d, str) and d not in ("pip",))
    conda.pop("python")
    assert conda == wanted


def test_python_version_agrees():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    assert f"python{project['requires-python']}" in environment["dependencies"]


def test_public_api():
    assert callable(unetseg.load_model) and unetseg.__version__
    assert set(unetseg.__all__) >= {"load_model", "UNet"}
