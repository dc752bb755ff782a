"""Provenance of a result: checksums of the inputs, the code's git commit, the versions.

Computed inside the job that writes the result (never passed as Snakemake params, where a
new commit would make Snakemake redo finished work).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from unetseg.nn.card import environment_versions

__all__ = ["sha256_path", "git_commit", "collect_provenance"]

BLOCK = 1 << 20


def sha256_path(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a directory (a Zarr store): its files' names and contents."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            while block := handle.read(BLOCK):
                digest.update(block)
    return digest.hexdigest()


def git_commit(directory: str | os.PathLike) -> str | None:
    """The commit checked out in ``directory`` (``+dirty`` if modified), or ``None``."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def collect_provenance(
    *, inputs: dict[str, Iterable[str]], sample_sheet: str | None = None, workflow_dir: str | None = None
) -> dict[str, Any]:
    """Checksums of the sample sheet and of every sample's files, commit and versions.

    Parameters
    ----------
    inputs : dict
        Sample id to the paths of its files (image, mask).
    """
    record: dict[str, Any] = {}
    if sample_sheet and Path(sample_sheet).is_file():
        record["sample_sheet"] = {"path": sample_sheet, "sha256": sha256_path(sample_sheet)}
    record["inputs"] = {sample: {path: sha256_path(path) for path in paths if path} for sample, paths in inputs.items()}
    if workflow_dir:
        record["git_commit"] = git_commit(workflow_dir)
    record["versions"] = environment_versions()
    return record
