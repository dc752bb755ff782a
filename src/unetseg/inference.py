"""Tiled inference over images of any size, Dask-parallel, streamed to Zarr.

The contract of :meth:`TiledPredictor.predict`: the result equals, up to float rounding,
:meth:`TiledPredictor.predict_whole` (one forward pass over the whole image padded with the
same border mode), because every tile reads a halo of at least the network's receptive-field
radius and starts on the network's pooling grid. The test suite checks this to 1e-5.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import dask
import numpy as np
import torch
import zarr
from tqdm.auto import tqdm

from .model import UNet
from .preprocess import check_finite, normalize
from .tiling import Border, Tile, border_indices, round_up, tile_grid

__all__ = [
    "PlaneSource",
    "NormalizedSource",
    "TileLedger",
    "TiledPredictor",
    "dask_client",
    "read_window",
    "pick_device",
]


class PlaneSource(Protocol):
    """Anything with a ``(Z, C, Y, X)`` shape that reads ``(C, y, x)`` blocks of a plane."""

    shape: tuple[int, int, int, int]

    def read(self, z: int, ys: slice, xs: slice) -> np.ndarray: ...


class NormalizedSource:
    """A :class:`PlaneSource` that normalises blocks of another one by fixed statistics."""

    def __init__(self, source: PlaneSource, stats: Sequence[tuple[float, float]]):
        self.source, self.stats, self.shape = source, list(stats), source.shape

    def read(self, z: int, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        block = normalize(self.source.read(z, ys, xs), self.stats)
        check_finite(block, getattr(self.source, "path", "image"), z, ys.start or 0, xs.start or 0)
        return block


class TileLedger:
    """Which tiles of an output are finished: one empty marker file per tile.

    A marker is created only after the tile's probabilities are written, and creating an
    empty file is atomic, so after a crash every marked tile is complete and an unmarked
    one (perhaps half-written) is computed again.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _marker(self, z: int, index: int) -> Path:
        return self.directory / f"{z}.{index}"

    def done(self) -> set[tuple[int, int]]:
        return {tuple(int(part) for part in p.name.split(".")) for p in self.directory.iterdir()}

    def mark(self, z: int, index: int) -> None:
        self._marker(z, index).touch()


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else Apple MPS, else the CPU."""
    if device and device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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


def _remote_batch(predictor: TiledPredictor, *args: Any) -> int:
    """One batch on a ``dask.distributed`` worker (module level, so that it pickles)."""
    return predictor._run_batch(*args)


def read_window(
    source: PlaneSource, z: int, window: Sequence[tuple[int, int]], border: Border = "mirror"
) -> np.ndarray:
    """Read a ``(C, h, w)`` float32 window that may extend past the image borders.

    Only the bounding box of the needed pixels is read from ``source``; the rest comes from
    mirroring (or zeros), exactly as if the whole image had been padded first.
    """
    _, channels, height, width = source.shape
    (y0, y1), (x0, x1) = window
    iy, ix = border_indices(y0, y1, height, border), border_indices(x0, x1, width, border)
    out = np.zeros((channels, y1 - y0, x1 - x0), dtype=np.float32)
    vy, vx = iy >= 0, ix >= 0
    if not vy.any() or not vx.any():
        return out
    ylo, yhi = int(iy[vy].min()), int(iy[vy].max()) + 1
    xlo, xhi = int(ix[vx].min()), int(ix[vx].max()) + 1
    block = np.asarray(source.read(z, slice(ylo, yhi), slice(xlo, xhi)), dtype=np.float32)
    out[np.ix_(np.arange(channels), np.flatnonzero(vy), np.flatnonzero(vx))] = block[
        np.ix_(np.arange(channels), iy[vy] - ylo, ix[vx] - xlo)
    ]
    return out


class TiledPredictor:
    """Overlap-tile inference with a trained U-Net.

    Parameters
    ----------
    model : UNet
        The network; put in eval mode and moved to ``device``.
    tile : int
        Write-region size of a tile (rounded up to the network grid).
    batch_size : int
        Tiles per forward pass.
    border : {"mirror", "zero"}
        How pixels beyond the image border are filled.
    device : str, optional
        ``"cuda"``, ``"cpu"``...; default: CUDA when available.
    amp : bool
        Mixed precision (bfloat16 or float16) on CUDA; ignored on the CPU.
    tta : bool
        Test-time augmentation: average the probabilities of the image and its horizontal,
        vertical and double flips (4x the compute).
    """

    def __init__(
        self,
        model: UNet,
        *,
        tile: int = 256,
        batch_size: int = 4,
        border: Border = "mirror",
        device: str | None = None,
        amp: bool = False,
        tta: bool = False,
    ):
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.grid, self.margin = model.grid, model.margin
        self.tile = round_up(tile, self.grid)
        self.batch_size, self.border = batch_size, border
        self.amp = amp and self.device.type == "cuda"
        self.tta = tta
        radius = model.receptive_field_radius()
        self.halo = radius if model.settings["padding"] == "valid" else round_up(radius, self.grid)
        self.classes = model.settings["out_channels"]

    def tiles(self, spatial_shape: tuple[int, int]) -> list[Tile]:
        return tile_grid(
            spatial_shape, self.tile, halo=self.halo, grid=self.grid, margin=self.margin,
            read_size=self._read_size,
        )  # fmt: skip

    def _read_size(self, size: int) -> int:
        if self.margin:
            return self.model.valid_input_size(size)
        return size + 2 * self.halo

    @torch.inference_mode()
    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``(B, K, h, w)`` for a normalised batch ``(B, C, H, W)``."""
        x = torch.from_numpy(np.ascontiguousarray(batch))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.to(self.device)
        dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
        flips = [(), (-1,), (-2,), (-2, -1)] if self.tta else [()]
        probs = None
        for dims in flips:  # test-time augmentation: average over mirrored copies
            with torch.autocast(self.device.type, dtype=dtype, enabled=self.amp):
                logits = self.model(x.flip(dims) if dims else x).float()
            p = torch.sigmoid(logits) if self.classes == 1 else torch.softmax(logits, dim=1)
            p = p.flip(dims) if dims else p
            probs = p if probs is None else probs + p
        return (probs / len(flips)).cpu().numpy()

    def predict_whole(self, image: np.ndarray) -> np.ndarray:
        """Reference result: one forward pass over the whole padded ``(C, Y, X)`` image.

        Returns ``(K, Y, X)`` probabilities. Needs the whole image in memory; for testing
        :meth:`predict` and for small images.
        """
        from .io import ImageSource

        _, height, width = image.shape
        source = ImageSource(image, "CYX")
        window = [(-self.halo, -self.halo + self._read_size(round_up(n, self.grid))) for n in (height, width)]
        probs = self.forward(read_window(source, 0, window, self.border)[np.newaxis])[0]
        off = self.halo - self.margin
        return probs[:, off : off + height, off : off + width]

    def _run_batch(
        self, source: PlaneSource, out: Any, z: int, tiles: list[tuple[int, Tile]], ledger: TileLedger | None
    ) -> int:
        batch = np.stack([read_window(source, z, tile.read, self.border) for _, tile in tiles])
        probs = self.forward(batch)
        for (index, tile), prob in zip(tiles, probs):
            out[(z, slice(None), *tile.write)] = prob[(slice(None), *tile.crop)]
            if ledger is not None:
                ledger.mark(z, index)
        return len(tiles)

    def _run_threads(self, batches: list, workers: int, bar: Any) -> None:
        lock = threading.Lock()

        def run(*args: Any) -> None:
            done = self._run_batch(*args)
            with lock:
                bar.update(done)

        dask.compute(*[dask.delayed(run)(*args) for args in batches], scheduler="threads", num_workers=workers)

    def _run_distributed(self, batches: list, client: Any, bar: Any) -> None:
        from distributed import as_completed

        # The predictor (with its model) goes to every worker once, not with every task.
        remote = client.scatter(self, broadcast=True, hash=False)
        futures = [client.submit(_remote_batch, remote, *args, pure=False) for args in batches]
        for future in as_completed(futures):
            bar.update(future.result())

    def predict(
        self,
        source: PlaneSource,
        out: Any,
        *,
        threads: int | None = None,
        progress: bool = True,
        ledger: TileLedger | None = None,
        client: Any = None,
    ) -> None:
        """Segment every plane of ``source`` into ``out``, tile by tile, in parallel.

        Parameters
        ----------
        source : PlaneSource
            Normalised image, ``(Z, C, Y, X)``.
        out : zarr.Array or ndarray
            ``(Z, K, Y, X)`` probabilities, written tile by tile. With chunks of the tile
            size, no two tasks write to the same chunk.
        threads : int, optional
            CPU threads in all (default: all cores), split between Dask workers that read,
            write and run batches, and torch's intra-op threads.
        progress : bool
            Show a progress bar on stderr.
        ledger : TileLedger, optional
            Records finished tiles; tiles it already lists are skipped, so a rerun after a
            crash computes only what is missing.
        client : distributed.Client, optional
            Run the batches on a ``dask.distributed`` cluster instead of local threads. The
            source and output must then be reachable from the workers (Zarr on a shared
            file system); each worker holds one copy of the model.
        """
        z_count, _, height, width = source.shape
        tiles = self.tiles((height, width))
        threads = threads or os.cpu_count() or 1
        workers = min(2, threads) if self.device.type == "cpu" else 2
        previous_threads = torch.get_num_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(max(1, threads // workers))
        finished = ledger.done() if ledger is not None else set()
        if finished and progress:
            print(f"resuming: {len(finished)} of {z_count * len(tiles)} tiles already done", file=sys.stderr)
        batches = []
        for z in range(z_count):
            pending = [(i, tile) for i, tile in enumerate(tiles) if (z, i) not in finished]
            for start in range(0, len(pending), self.batch_size):
                batches.append((source, out, z, pending[start : start + self.batch_size], ledger))
        bar = tqdm(total=z_count * len(tiles), initial=len(finished), unit="tile", disable=None if progress else True)
        started = time.perf_counter()
        try:
            if client is not None:
                self._run_distributed(batches, client, bar)
            else:
                self._run_threads(batches, workers, bar)
        finally:
            bar.close()
            # torch's thread count is global: leave it as found (training validates with this).
            torch.set_num_threads(previous_threads)
        seconds = time.perf_counter() - started
        if progress and batches:
            print(
                f"segmented {z_count} plane(s) of {height}x{width} in {len(tiles)} tile(s) each, "
                f"{seconds:.1f} s ({z_count * height * width / seconds / 1e6:.2f} Mpixel/s) on {self.device}",
                file=sys.stderr,
            )

    def create_output(
        self, path: str | os.PathLike, spatial_zyx: tuple[int, int, int], *, attributes: dict | None = None
    ) -> zarr.Array:
        """A ``(Z, K, Y, X)`` float32 Zarr array chunked by tile, for :meth:`predict`."""
        z_count, height, width = spatial_zyx
        return zarr.create_array(
            str(path), shape=(z_count, self.classes, height, width), dtype="float32",
            chunks=(1, self.classes, min(self.tile, height), min(self.tile, width)), fill_value=np.nan,
            attributes={"axes": "ZCYX", "content": "probabilities", **(attributes or {})}, overwrite=True,
        )  # fmt: skip

    def resumable_output(
        self, path: str | os.PathLike, spatial_zyx: tuple[int, int, int], *, fingerprint: str, attributes: dict | None = None
    ) -> tuple[zarr.Array, TileLedger]:
        """The output array at ``path`` and its ledger: reopened if an interrupted run with
        the same ``fingerprint`` left them there, else created afresh."""
        path = Path(path)
        ledger_dir = path.with_name(path.name + ".tiles")
        try:
            existing = zarr.open_array(str(path), mode="r+")
            if existing.attrs.get("fingerprint") == fingerprint and ledger_dir.is_dir():
                return existing, TileLedger(ledger_dir)
        except (FileNotFoundError, ValueError, KeyError, zarr.errors.BaseZarrError):
            pass
        shutil.rmtree(ledger_dir, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)
        out = self.create_output(path, spatial_zyx, attributes={**(attributes or {}), "fingerprint": fingerprint})
        return out, TileLedger(ledger_dir)
