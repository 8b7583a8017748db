"""pytest-benchmark entries for decoder sampling: onnxruntime fp32 / int8 (via vaezoo.runtime) and torch eager.

All backends share this process here, so their thread pools can disturb each other: the authoritative
comparison is ``vaezoo bench sampling`` (one process per backend). Run with
``pytest benchmarks/test_bench_sampling.py --benchmark-json out.json``.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from exporters.graph import load_torch_decoder
from exporters.precision import to_int8
from vaezoo.runtime import Decoder

NAME = "mlp-vae.mnist5k"
THREADS = 2


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    fp32 = Decoder(NAME).path
    int8 = tmp_path_factory.mktemp("int8") / "int8.onnx"
    onnx.save(to_int8(onnx.load(str(fp32)), "quint8"), str(int8))
    return {"ort-fp32": fp32, "ort-int8": int8}


@pytest.mark.parametrize("batch", [1, 64, 1024])
@pytest.mark.parametrize("backend", ["ort-fp32", "ort-int8", "torch"])
def test_decode(benchmark, files, backend, batch):
    z = np.random.default_rng(0).standard_normal((batch, 32), dtype=np.float32)
    if backend == "torch":
        torch.set_num_threads(THREADS)
        head = load_torch_decoder(onnx.load(str(files["ort-fp32"])))

        def run():
            with torch.inference_mode():
                return head(torch.from_numpy(z)).numpy()
    else:
        dec = Decoder(files[backend], intra_op_threads=THREADS, inter_op_threads=1)

        def run():
            return dec.decode(z)

    benchmark.extra_info.update({"backend": backend, "batch": batch, "threads": THREADS, "decoder": NAME})
    out = benchmark(run)
    assert out.shape == (batch, 1, 28, 28)
    benchmark.extra_info["images_per_s"] = batch / benchmark.stats.stats.mean
