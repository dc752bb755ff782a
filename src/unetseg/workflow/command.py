"""How the workflow's rules find the ``unetseg`` command."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from unetseg.errors import InputError

__all__ = ["ensure_command_on_path"]


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
