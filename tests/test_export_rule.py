"""`export: true` adds the bioimage.io package to the run; without a URL to cite the software
by, the run stops before any job."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def dry_run(root: Path, *config: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config", *config]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.workflow
def test_export_is_planned_only_when_asked_and_needs_a_citation_url(tmp_path):
    for name in ("Snakefile", "workflow", "config", "profiles"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    plain = dry_run(tmp_path, "dataset=x")
    assert plain.returncode == 0 and "rule export:" not in plain.stdout
    asked = dry_run(tmp_path, "dataset=x", "export=true", "export_software_url=https://example.org/lab/unetseg")
    assert asked.returncode == 0, asked.stderr[-2000:]
    assert "rule export:" in asked.stdout and "results/x/export/x.bioimageio.zip" in asked.stdout
    if (
        "Project-URL"
        not in subprocess.run(
            [sys.executable, "-m", "pip", "show", "-v", "unetseg"], capture_output=True, text=True
        ).stdout
    ):
        missing = dry_run(tmp_path, "dataset=x", "export=true")
        assert missing.returncode != 0 and "--software-url" in missing.stdout + missing.stderr
    assert not (tmp_path / "results").exists()
