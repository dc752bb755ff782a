"""Tiled inference on a dask.distributed cluster of processes equals the threaded result."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from unetseg.inference.predictor import TiledPredictor
from unetseg.inference.scheduler import dask_client
from unetseg.io.images import ImageSource

pytest.importorskip("distributed")


@pytest.mark.slow
@pytest.mark.parametrize("blend", ["none", "gaussian"])
def test_local_cluster_of_processes_matches_threads(tiny_unet, rng, tmp_path, blend):
    image = rng.random((2, 1, 70, 90)).astype(np.float32)
    zarr.create_array(tmp_path / "image.zarr", data=image, chunks=(1, 1, 32, 32))
    source = ImageSource(zarr.open_array(tmp_path / "image.zarr", mode="r"), "ZCYX")
    predictor = TiledPredictor(tiny_unet(depth=2), tile=32, batch_size=2, blend=blend)

    threaded = predictor.create_output(tmp_path / "threads.zarr", (2, 70, 90))
    predictor.predict(source, threaded, progress=False)
    distributed = predictor.create_output(tmp_path / "distributed.zarr", (2, 70, 90))
    with dask_client("local", workers=2) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        predictor.predict(source, distributed, progress=False, client=client)
    np.testing.assert_array_equal(distributed[:], threaded[:])
    assert not np.isnan(threaded[:]).any()


def test_no_scheduler_means_local_threads():
    with dask_client(None) as client:
        assert client is None
    with dask_client("threads") as client:
        assert client is None
