"""Speed of per-example gradients: torch.func (vmap over grad, chunked as ``vaezoo bench gradvar`` chunks
it) against a plain Python loop of autograd calls, at B = 256, on the reference VAE (784-512-256 ReLU,
32-d latent, about 1.1M parameters). Both run side by side in one process; the ratio is in extra_info.

    .venv/bin/pytest benchmarks/test_bench_gradvar.py --benchmark-json=benchmarks/results/gradvar.json

A benchmark, not a test: nothing here asserts a speed. It does check that both paths agree.
"""

from __future__ import annotations

import statistics

import pytest
import torch

from vaezoo.bench.timing import timed
from vaezoo.gradnoise.measure import GradVarConfig, chunk_size
from vaezoo.gradnoise.pergrad import DrawGradients
from vaezoo.models import get_model
from vaezoo.objectives import ObjectiveConfig
from vaezoo.tracking.provenance import device_name

B = 256
REPEATS = 3

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")]),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bound,estimator,K", [("elbo", "reparam", 1), ("iwae", "dreg", 8)])
def test_per_example_gradients_torch_func_vs_loop(benchmark, device, bound, estimator, K):
    dev = torch.device(device)
    torch.manual_seed(0)
    model = get_model("vae", input_shape=(1, 28, 28)).to(dev)
    engine = DrawGradients(model, ObjectiveConfig(bound=bound, estimator=estimator, k=K))
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.rand(B, 1, 1, 28, 28, generator=g), generator=g).to(dev)  # B draws of one example
    eps = torch.randn(B, K, 1, model.latent_dim, generator=g).to(dev)
    n_params = sum(engine.sizes.values())
    chunk = chunk_size(1, K, n_params, GradVarConfig())

    def vectorised():
        return [engine(x[i : i + chunk], eps[i : i + chunk]) for i in range(0, B, chunk)]

    def loop():
        return engine.loop(x, eps)

    fast, slow = vectorised(), loop()  # also the warm-up of both
    for net in slow:
        joined = torch.cat([part[net] for part in fast])
        assert torch.allclose(joined, slow[net], rtol=1e-3, atol=1e-4), net
    del fast, slow
    t_loop, t_vec = [], []
    for _ in range(REPEATS):  # interleaved, so drifting machine load hits both alike
        t_loop.append(timed(loop, dev, 1))
        t_vec.append(timed(vectorised, dev, 1))
    benchmark.pedantic(vectorised, rounds=REPEATS, iterations=1, warmup_rounds=0)
    loop_s, vec_s = statistics.median(t_loop), statistics.median(t_vec)
    benchmark.extra_info.update(
        {
            "B": B,
            "K": K,
            "objective": f"{bound}/{estimator}",
            "parameters": n_params,
            "chunk": chunk,
            "loop_s": loop_s,
            "torch_func_s": vec_s,
            "speedup_torch_func_vs_loop": loop_s / vec_s,
            "device": device_name(dev),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
    )
    print(
        f"\n{bound}/{estimator} K={K} on {device}: loop {loop_s:.3f}s, torch.func {vec_s:.3f}s, speed-up {loop_s / vec_s:.1f}x"
    )
