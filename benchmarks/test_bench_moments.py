"""Per-example gradient moments (sum, sum of squares, squared norms) at B = 256: vaezoo.gradnoise.moments
(one backward pass with layer hooks) against a per-example autograd loop, against BackPACK's SumGradSquared
and Variance, and against one ordinary backward pass of the same batch; interleaved, ratios in extra_info.

    .venv/bin/pytest benchmarks/test_bench_moments.py --benchmark-json=.benchmarks/moments.json

``moments/*``: the loop computes the same moments one example at a time (the issue's baseline). Goal >= 10x
for ELBO/reparam, K = 1, on the reference MLP VAE (784-512-256-32, 1.09M parameters); IWAE/DReG at K = 8 and
the conv VAE are reported beside it. ``moments-vs-backpack``: BackPACK (benchmark-only dependency) on the same
MLP, batch and loss (the reparameterised ELBO, K = 1, summed over the batch); vaezoo must not be slower, and
the moments must agree. ``moments-vs-backward``: the cost over one ordinary forward + backward pass (goal:
at most 2x, i.e. a "speedup" >= 0.5). Peak memory per method at B = 256 and 2048 is the slow benchmark
at the end (memory is deterministic; tests/test_moments.py asserts the engine's bound).
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from vaezoo.gradnoise.memory import peak_bytes
from vaezoo.gradnoise.moments import GradientMoments, Moments
from vaezoo.models import get_model
from vaezoo.objectives import Objective, ObjectiveConfig

B = 256
# Floors, from runs on a shared 2-core EPYC at one thread, whose load moves the ratios by 2-3x (measured ->
# floor): MLP ELBO K=1 vs loop 44-85x -> 10 (the goal); MLP IWAE/DReG K=8 2.8-6x -> 2; conv ELBO K=1
# 3.7-10x -> 2; vs BackPACK ~1.4x -> 1.0 (the goal: not slower); vs one backward pass 0.5-0.63 -> 0.4 (the
# goal is 0.5, i.e. at most twice the cost; a loaded machine has measured just below it).
CASES = [
    ("mlp", "elbo", "reparam", 1, 10.0),
    ("mlp", "iwae", "dreg", 8, 2.0),
    ("conv", "elbo", "reparam", 1, 2.0),
]
MIN_VS_BACKPACK = 1.0
MIN_VS_BACKWARD = 0.4


def setup(backbone: str, bound: str, estimator: str, K: int, B: int = B):
    torch.manual_seed(0)
    model = get_model("vae", backbone=backbone, input_shape=(1, 28, 28))
    cfg = ObjectiveConfig(bound=bound, estimator=estimator, k=K)
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.rand(B, 1, 28, 28, generator=g), generator=g)
    return model, cfg, x, torch.randn(K, B, model.latent_dim, generator=g)


def loop_moments(model, cfg: ObjectiveConfig, x: torch.Tensor, eps: torch.Tensor) -> Moments:
    """One autograd.grad per example (its surrogate at batch one), reduced into the moments as it goes."""
    objective = Objective(dataclasses.replace(cfg, baseline_decay=0.0))
    params = {f"model.{n}": p for n, p in model.named_parameters()}
    m = Moments(
        {n: torch.zeros_like(p) for n, p in params.items()},
        {n: torch.zeros_like(p) for n, p in params.items()},
        {n: torch.zeros(len(x)) for n in params},
        len(x),
    )
    for i in range(len(x)):
        value = objective.estimate(model, x[i : i + 1], eps[:, i : i + 1]).surrogate.sum()
        for n, g in zip(params, torch.autograd.grad(value, list(params.values()), allow_unused=True)):
            if g is not None:
                m.sum[n] += g
                m.sum_sq[n] += g.square()
                m.sq_norms[n][i] = g.square().sum()
    return m


def max_rel_diff(mine: Moments, ref: Moments) -> float:
    """Largest |difference| over a tensor, relative to that tensor's largest entry, over all moments."""
    worst = 0.0
    for field in ("sum", "sum_sq", "sq_norms"):
        for n, r in getattr(ref, field).items():
            scale = float(r.abs().max())
            if scale > 0:
                worst = max(worst, float((getattr(mine, field)[n] - r).abs().max()) / scale)
    return worst


@pytest.mark.parametrize(
    "backbone,bound,estimator,K,floor", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}-k{c[3]}" for c in CASES]
)
def test_moments_vs_per_example_loop(side_by_side, benchmark, backbone, bound, estimator, K, floor):
    model, cfg, x, eps = setup(backbone, bound, estimator, K)
    engine = GradientMoments(model, cfg)
    ours = engine(x, eps)
    assert ours.fallback == {}
    diff = max_rel_diff(ours, loop_moments(model, cfg, x, eps))
    assert diff < 1e-3, diff
    side_by_side(
        f"moments/{backbone}-{bound}-{estimator}-k{K}-b{B}",
        lambda: engine(x, eps),
        lambda: loop_moments(model, cfg, x, eps),
        rounds=3,
        warmup_rounds=1,
        min_speedup=floor,
        work=B,
    )
    benchmark.extra_info.update(max_rel_diff_vs_loop=diff, parameters=sum(p.numel() for p in model.parameters()))


def extended(model):
    """A copy of the model with BackPACK's hooks (its extend() breaks torch.func on the model it touches)."""
    from backpack import extend

    model = copy.deepcopy(model)
    extend(model.encoder)
    extend(model.decoder)
    return model


def backpack_moments(model, cfg, x, eps):
    """BackPACK's SumGradSquared and Variance for the summed surrogate (so its per-example gradients are
    -g_i, whose squares are ours); Variance is sum g^2 / B - (sum g / B)^2."""
    from backpack import backpack
    from backpack.extensions import SumGradSquared, Variance

    objective = Objective(cfg)
    model.zero_grad(set_to_none=True)
    loss = -objective.estimate(model, x, eps).surrogate.sum()
    with backpack(SumGradSquared(), Variance()):
        loss.backward()
    return {f"model.{n}": (p.sum_grad_squared, p.variance) for n, p in model.named_parameters()}


def test_moments_vs_backpack(side_by_side, benchmark):
    pytest.importorskip("backpack", reason="backpack-for-pytorch not installed (make bench-ci installs it)")
    model, cfg, x, eps = setup("mlp", "elbo", "reparam", 1)
    engine = GradientMoments(model, cfg)
    ours = engine(x, eps)
    bp_model = extended(model)
    theirs = backpack_moments(bp_model, cfg, x, eps)
    worst_sq = worst_var = 0.0
    for n, (sgs, var) in theirs.items():
        mine_var = ours.sum_sq[n] / B - (ours.sum[n] / B).square()
        worst_sq = max(worst_sq, float((ours.sum_sq[n] - sgs).abs().max() / sgs.abs().max()))
        worst_var = max(worst_var, float((mine_var - var).abs().max() / var.abs().max()))
    assert worst_sq < 1e-4 and worst_var < 1e-3, (worst_sq, worst_var)
    side_by_side(
        f"moments-vs-backpack/mlp-elbo-reparam-k1-b{B}",
        lambda: engine(x, eps),
        lambda: backpack_moments(bp_model, cfg, x, eps),
        rounds=15,
        warmup_rounds=3,
        min_speedup=MIN_VS_BACKPACK,
        work=B,
    )
    benchmark.extra_info.update(max_rel_diff_sum_grad_squared=worst_sq, max_rel_diff_variance=worst_var)


def test_moments_vs_one_backward_pass(side_by_side):
    model, cfg, x, eps = setup("mlp", "elbo", "reparam", 1)
    engine = GradientMoments(model, cfg)
    objective = Objective(cfg)
    engine(x, eps)

    def backward():
        model.zero_grad(set_to_none=True)
        objective.estimate(model, x, eps).surrogate.mean().neg().backward()

    side_by_side(
        f"moments-vs-backward/mlp-elbo-reparam-k1-b{B}",
        lambda: engine(x, eps),
        backward,
        rounds=15,
        warmup_rounds=3,
        min_speedup=MIN_VS_BACKWARD,
        work=B,
    )


@pytest.mark.slow
@pytest.mark.parametrize("batch", [256, 2048])
def test_peak_memory_by_method(benchmark, batch):
    """Peak bytes (torch's profiler, one thread) of each method on the reference MLP, ELBO/reparam, K = 1.
    torch.func is chunked as ``vaezoo bench gradvar`` chunks it (chunk_mb = 256)."""
    from vaezoo.gradnoise.measure import GradVarConfig, chunk_size
    from vaezoo.gradnoise.pergrad import DrawGradients

    model, cfg, x, eps = setup("mlp", "elbo", "reparam", 1, batch)
    engine = GradientMoments(model, cfg)
    engine(x, eps)
    draws = DrawGradients(model, cfg)
    chunk = chunk_size(1, 1, sum(draws.sizes.values()), GradVarConfig())
    xs, es = x.unsqueeze(1), eps.permute(1, 0, 2).unsqueeze(2)

    def torch_func():
        for i in range(0, batch, chunk):  # reduced as made, like measure_pool
            for g in draws(xs[i : i + chunk], es[i : i + chunk]).values():
                g.square().sum(0)

    def backward():
        model.zero_grad(set_to_none=True)
        Objective(cfg).estimate(model, x, eps).surrogate.mean().neg().backward()

    methods = {"hooks": lambda: engine(x, eps), "torch_func": torch_func, "backward": backward}
    if batch <= 256:
        methods["loop"] = lambda: loop_moments(model, cfg, x, eps)
    try:
        bp_model = extended(model)
        methods["backpack"] = lambda: backpack_moments(bp_model, cfg, x, eps)
    except ImportError:
        pass
    peaks = {name: peak_bytes(fn) for name, fn in methods.items()}
    benchmark.extra_info.update({f"peak_mib_{k}": v / 2**20 for k, v in peaks.items()}, B=batch, torch_func_chunk=chunk)
    benchmark.pedantic(lambda: engine(x, eps), rounds=1, iterations=1)
    print(f"\nB={batch} peak MiB: " + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in peaks.items()))
