"""pytest-benchmark entries for decoder sampling: onnxruntime fp32 / int8 and torch eager, each decoding
through ``vaezoo bench sampling``'s own per-backend function.

All backends share this process here, so their thread pools can disturb each other: the authoritative
comparison is ``vaezoo bench sampling`` (one process per backend). Run with
``pytest benchmarks/test_bench_sampling.py --benchmark-json out.json``.
"""

from __future__ import annotations

import numpy as np
import pytest

from vaezoo.bench.sampling import _decode_fn, prepare

NAME = "mlp-vae.mnist5k"
THREADS = 2


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The benchmark's own fp32 and int8 files; the shipped decoder is pulled into a temporary cache, not the
    user's."""
    tmp = tmp_path_factory.mktemp("sampling")
    return prepare(NAME, tmp, cache=tmp / "cache")


@pytest.mark.parametrize("batch", [1, 64, 1024])
@pytest.mark.parametrize("backend", ["ort-fp32", "ort-int8", "torch"])
def test_decode(benchmark, files, backend, batch):
    z = np.random.default_rng(0).standard_normal((batch, files["latent_dim"]), dtype=np.float32)
    # the torch backend sets torch's thread count; conftest's autouse bench_threads fixture restores it
    run = _decode_fn(backend, files["int8" if backend == "ort-int8" else "fp32"], THREADS)
    benchmark.extra_info.update({"backend": backend, "batch": batch, "threads": THREADS, "decoder": NAME})
    out = benchmark(run, z)
    assert out.shape == (batch, 1, 28, 28)
    if not benchmark.disabled:  # --benchmark-disable: one call, no stats
        benchmark.extra_info["images_per_s"] = batch / benchmark.stats.stats.mean
