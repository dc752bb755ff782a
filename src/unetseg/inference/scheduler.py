"""Where tile tasks run: local threads or a ``dask.distributed`` cluster, with progress."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dask
from tqdm.auto import tqdm

__all__ = ["dask_client", "run_tasks"]


@contextmanager
def dask_client(scheduler: str | None, *, workers: int = 2) -> Iterator[Any]:
    """A ``dask.distributed`` client for ``scheduler``, or ``None`` for local threads.

    Parameters
    ----------
    scheduler : str or None
        ``None``, ``""`` or ``"threads"``: threads in this process (no client).
        ``"local"``: a local cluster of ``workers`` single-threaded processes.
        Anything else: the address of a running scheduler, e.g. ``tcp://10.0.0.5:8786``
        (one started by dask-jobqueue's ``SLURMCluster``, or ``dask scheduler``).
    """
    if not scheduler or scheduler == "threads":
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler == "local":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        with cluster, Client(cluster) as client:
            yield client
    else:
        with Client(scheduler) as client:
            yield client


def _call(predictor: Any, method: str, *args: Any) -> Any:
    """A predictor method as a Dask task (module level, so that it pickles by reference)."""
    return getattr(predictor, method)(*args)


def run_tasks(
    make_tasks: Callable[[Any], Sequence[Any]], owner: Any, *, client: Any, workers: int, total: int, initial: int,
    progress: bool,
) -> int:  # fmt: skip
    """Compute tasks whose results are ``(tiles done, tiles skipped)``; the skipped count.

    ``make_tasks(owner)`` builds the tasks; with a ``client``, ``owner`` (the predictor,
    holding the model) is scattered to every worker once and the tasks refer to its future.
    """
    bar = tqdm(total=total, initial=initial, unit="tile", disable=None if progress else True)
    skipped = 0
    try:
        if client is not None:
            from distributed import as_completed

            remote = client.scatter(owner, broadcast=True, hash=False)
            for future in as_completed(client.compute(make_tasks(remote))):
                done, skip_count = future.result()
                bar.update(done)
                skipped += skip_count
            return skipped
        lock, counts = threading.Lock(), [0]

        def report(result: tuple[int, int]) -> tuple[int, int]:
            with lock:
                bar.update(result[0])
                counts[0] += result[1]
            return result

        tasks = [dask.delayed(report)(task) for task in make_tasks(owner)]
        dask.compute(*tasks, scheduler="threads", num_workers=workers)
        return counts[0]
    finally:
        bar.close()
