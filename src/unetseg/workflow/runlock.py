"""Clearing the lock a killed Snakemake run leaves behind, and only that one.

Snakemake locks its working directory while it runs and removes the lock when it ends;
a run killed with SIGKILL (or a power loss) leaves the lock, and the next run refuses to
start until ``snakemake --unlock``. The workflow records the host and process id of each
run while it runs; a later start that finds the locks, with that process gone from this
host, removes them, so that ``snakemake --rerun-incomplete`` simply continues.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

__all__ = ["record_run", "forget_run", "clear_stale_locks"]

RECORD = Path(".snakemake") / "unetseg-run.json"
LOCKS = Path(".snakemake") / "locks"


def record_run(workdir: str | os.PathLike = ".") -> None:
    """Note that this process runs the workflow in ``workdir`` (call when the run starts)."""
    path = Path(workdir) / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))


def forget_run(workdir: str | os.PathLike = ".") -> None:
    """Remove the note (call when the run ends, successfully or not)."""
    (Path(workdir) / RECORD).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clear_stale_locks(workdir: str | os.PathLike = ".") -> str | None:
    """Remove Snakemake's locks if the run that took them was killed on this host.

    Returns a message saying what was removed, or ``None`` if nothing was stale.
    """
    record, locks = Path(workdir) / RECORD, Path(workdir) / LOCKS
    if not record.is_file() or not locks.is_dir() or not any(locks.iterdir()):
        return None
    try:
        run = json.loads(record.read_text())
        host, pid = run["host"], int(run["pid"])
    except (ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname() or _alive(pid):
        return None
    shutil.rmtree(locks)
    record.unlink(missing_ok=True)
    return f"removed the lock left by a killed run (process {pid} on {host} is gone)"
