"""How the workflow's rules find the ``unetseg`` command."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from unetseg.errors import InputError

__all__ = ["ensure_command_on_path", "report_failed_samples"]


def ensure_command_on_path() -> None:
    """Make ``unetseg`` callable by the rules' shell commands, or say how to.

    Snakemake started as ``.venv/bin/snakemake`` without activating the environment has
    ``unetseg`` beside the Python that runs it: that directory is put on ``PATH`` (which the
    rules' shells inherit).

    Raises
    ------
    InputError
        When the command is found neither on ``PATH`` nor beside this Python.
    """
    here = Path(sys.executable).parent
    if shutil.which("unetseg") is None and (here / "unetseg").exists():
        os.environ["PATH"] = f"{here}{os.pathsep}{os.environ.get('PATH', '')}"
    if shutil.which("unetseg") is None:
        raise InputError(
            "the 'unetseg' command is not on PATH: activate the environment the project was "
            "installed into (source .venv/bin/activate after `make demo` or `make test`)."
        )


def report_failed_samples(summary: str) -> None:
    """Name, at the end of a run, the images that failed to segment (the others were)."""
    import pandas as pd

    if not Path(summary).exists():
        return
    table = pd.read_csv(summary, dtype={"error": str}).fillna({"error": ""})
    failed = table[table["status"] == "failed"]
    if failed.empty:
        return
    print(f"unetseg: {len(failed)} of {len(table)} image(s) failed to segment; the others were segmented:",
          file=sys.stderr)  # fmt: skip
    for row in failed.itertuples(index=False):
        print(f"  {row.sample}: {row.error}", file=sys.stderr)
    print(f"  (listed in {summary} and the report; fix or remove them and rerun)", file=sys.stderr)
