"""The gradient-moments engine (vaezoo.gradnoise.moments) against a plain per-example autograd loop: sums,
sums of squares and per-example squared norms for every bound/estimator pair the gradient-variance study
measures, K = 1 and K > 1, MLP and conv backbones; the fallback for what the hooks cannot serve, named in
the result; the chunk bound; and peak memory that does not grow with B like per-example gradients would.

Fixed seeds and small models throughout; tolerances are float32 round-off, not tuned.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from vaezoo.core.errors import VaezooError
from vaezoo.gradnoise.memory import peak_bytes
from vaezoo.gradnoise.moments import GradientMoments, Moments
from vaezoo.models import get_model
from vaezoo.models.vae import VAE
from vaezoo.objectives import Objective, ObjectiveConfig

SHAPE = (1, 8, 8)
SMALL = {"input_shape": SHAPE, "hidden": (24,), "latent_dim": 3, "channels": (3, 5)}
# every (bound, estimator) pair of the study's grid, and kl='mc' beside the default analytic KL
PAIRS = [
    ("elbo", "reparam", "auto"),
    ("elbo", "reparam", "mc"),
    ("elbo", "score", "auto"),
    ("elbo", "stl", "auto"),
    ("iwae", "reparam", "auto"),
    ("iwae", "score", "auto"),
    ("iwae", "stl", "auto"),
    ("iwae", "dreg", "auto"),
]


def batch(model, B: int, K: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.bernoulli(torch.rand(B, *model.cfg.input_shape, generator=g), generator=g)
    return x, torch.randn(K, B, model.latent_dim, generator=g)


def loop_moments(model, cfg: ObjectiveConfig, x: torch.Tensor, eps: torch.Tensor) -> Moments:
    """The reference: one autograd.grad per example of its surrogate (the batch of one), then the moments."""
    objective = Objective(dataclasses.replace(cfg, baseline_decay=0.0))
    params = {f"model.{n}": p for n, p in model.named_parameters()}
    rows = {n: [] for n in params}
    for i in range(x.shape[0]):
        value = objective.estimate(model, x[i : i + 1], eps[:, i : i + 1]).surrogate.sum()
        grads = torch.autograd.grad(value, list(params.values()), allow_unused=True)
        for n, g in zip(params, grads):
            rows[n].append(torch.zeros_like(params[n]) if g is None else g)
    stacked = {n: torch.stack(r).double() for n, r in rows.items()}
    return Moments(
        sum={n: g.sum(0) for n, g in stacked.items()},
        sum_sq={n: g.square().sum(0) for n, g in stacked.items()},
        sq_norms={n: g.reshape(len(g), -1).square().sum(1) for n, g in stacked.items()},
        batch_size=x.shape[0],
    )


def assert_same(mine: Moments, ref: Moments, rtol: float = 1e-4) -> None:
    assert list(mine.sum) == list(ref.sum)  # every parameter, in the model's order
    for field in ("sum", "sum_sq", "sq_norms"):
        for n, r in getattr(ref, field).items():
            m = getattr(mine, field)[n].double()
            assert m.shape == r.shape, (field, n)
            # per-entry tolerance against the tensor's own scale: entries near zero carry only round-off
            assert torch.allclose(m, r, rtol=rtol, atol=rtol * float(r.abs().max()) + 1e-12), (field, n)


@pytest.mark.parametrize("backbone", ["mlp", "conv"])
@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("bound,estimator,kl", PAIRS)
def test_hooks_equal_the_per_example_loop(backbone, K, bound, estimator, kl):
    torch.manual_seed(0)
    model = get_model("vae", backbone=backbone, **SMALL)
    cfg = ObjectiveConfig(bound=bound, estimator=estimator, k=K, kl=kl)
    x, eps = batch(model, 5, K)
    m = GradientMoments(model, cfg)(x, eps)
    assert m.fallback == {}  # Linear, Conv2d and ConvTranspose2d: every parameter went through the hooks
    assert_same(m, loop_moments(model, cfg, x, eps))


def test_small_chunks_change_nothing():
    """A chunk of one example against the default chunk (conv and K > 1: every layer is chunked)."""
    torch.manual_seed(1)
    model = get_model("vae", backbone="conv", **SMALL)
    cfg = ObjectiveConfig(bound="iwae", estimator="dreg", k=4)
    x, eps = batch(model, 7, 4)
    big = GradientMoments(model, cfg)(x, eps)
    small = GradientMoments(model, cfg, chunk_bytes=60_000)(x, eps)  # about one example of the widest layer
    assert_same(small, loop_moments(model, cfg, x, eps))
    assert_same(big, loop_moments(model, cfg, x, eps))


def test_score_estimator_is_stateless_in_the_engine():
    """The score baseline (on by default in ObjectiveConfig) would make g_i depend on earlier calls."""
    torch.manual_seed(2)
    model = get_model("vae", **SMALL)
    cfg = ObjectiveConfig(bound="elbo", estimator="score", k=2, baseline_decay=0.9)
    engine = GradientMoments(model, cfg)
    x, eps = batch(model, 4, 2)
    first, second = engine(x, eps), engine(x, eps)
    for n in first.sum_sq:
        assert torch.equal(first.sum_sq[n], second.sum_sq[n])
    assert_same(first, loop_moments(model, cfg, x, eps))


def test_torch_func_path_alone_equals_the_loop():
    torch.manual_seed(3)
    model = get_model("vae", **SMALL)
    cfg = ObjectiveConfig(bound="iwae", estimator="dreg", k=3)
    x, eps = batch(model, 5, 3)
    m = GradientMoments(model, cfg, hooks=False)(x, eps)
    assert set(m.fallback) == {"model"}
    assert_same(m, loop_moments(model, cfg, x, eps))


# --- what the hooks cannot serve: the fallback, named ----------------------------------------------------


def test_vamp_prior_encoder_goes_to_the_fallback_even_when_its_rows_divide_the_batch():
    """The encoder also runs on the C pseudo-inputs, rows every example's gradient shares: with C = 8 and B = 4
    the row count alone would pass them as two rows per example; the check at B = 1 sends them to torch.func."""
    torch.manual_seed(4)
    model = get_model("vamp", pseudo_inputs=8, **SMALL)
    cfg = ObjectiveConfig(bound="elbo", kl="mc", k=2)
    x, eps = batch(model, 4, 2)
    m = GradientMoments(model, cfg)(x, eps)
    assert {n for n in m.fallback if n.startswith("model.encoder.")} and "model.decoder.0" not in m.fallback
    assert_same(m, loop_moments(model, cfg, x, eps))



class ScaledLinear(nn.Linear):
    """A Linear subclass with its own forward: the hooks must not assume nn.Linear's."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return 2.0 * super().forward(a)


class TiedOutput(nn.Module):
    """The decoder's output layer reusing the encoder's first weight, transposed (weight tying)."""

    def __init__(self, source: nn.Linear) -> None:
        super().__init__()
        self.source = [source]  # not a submodule: the weight stays the encoder's
        self.bias = nn.Parameter(torch.zeros(source.in_features))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.source[0].weight.t(), self.bias)


class BatchMajorVAE(VAE):
    """Decodes [K, B, d] flattened example-major (rows i K + k), not samples-major as the hooks assume."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2:
            return super().decode(z)
        K, B = z.shape[:2]
        out = self.decoder(z.transpose(0, 1).reshape(B * K, -1))
        return out.reshape(B, K, *out.shape[1:]).transpose(0, 1)


class DetachedScaleVAE(VAE):
    """q's scale from a second encoder call with detached parameters swapped in (torch.func.functional_call):
    that call carries no gradient to the encoder's parameters, which the hooks must see."""

    def encode(self, x: torch.Tensor):
        q = super().encode(x)
        frozen = {n: p.detach() for n, p in self.encoder.named_parameters()}
        raw = functional_call(self.encoder, frozen, (x,)).chunk(2, dim=-1)[1]
        return type(q)(q.mu, F.softplus(raw) + 1e-4)


def _small(cls=None, **kw):
    torch.manual_seed(4)
    model = get_model("vae", **{**SMALL, **kw})
    if cls is not None:
        model.__class__ = cls
    return model


def test_parameter_outside_a_layer_falls_back_and_stays_exact():
    model = _small(likelihood="gaussian", learn_sigma="global")
    cfg = ObjectiveConfig(bound="elbo", estimator="reparam", k=2)
    x, eps = batch(model, 5, 2)
    m = GradientMoments(model, cfg)(x, eps)
    assert set(m.fallback) == {"model.likelihood"} and "GaussianLikelihood" in m.fallback["model.likelihood"]
    assert_same(m, loop_moments(model, cfg, x, eps))


def test_layer_subclass_falls_back():
    model = _small()
    model.decoder[0] = ScaledLinear(model.decoder[0].in_features, model.decoder[0].out_features)
    cfg = ObjectiveConfig(bound="iwae", estimator="dreg", k=2)
    x, eps = batch(model, 5, 2)
    m = GradientMoments(model, cfg)(x, eps)
    assert set(m.fallback) == {"model.decoder.0"} and "ScaledLinear" in m.fallback["model.decoder.0"]
    assert_same(m, loop_moments(model, cfg, x, eps))


def test_weight_used_outside_its_layer_is_caught_by_the_sum_check():
    model = _small()
    first = model.encoder[1]
    model.decoder[2] = TiedOutput(first)  # decoder: Linear(3, 24), ReLU, TiedOutput -> 64
    cfg = ObjectiveConfig(bound="elbo", estimator="reparam", k=1)
    x, eps = batch(model, 5, 1)
    m = GradientMoments(model, cfg)(x, eps)
    assert "model.encoder.1" in m.fallback and "used outside" in m.fallback["model.encoder.1"]
    assert "model.decoder.2" in m.fallback  # its bias lives in a module the hooks do not take
    assert_same(m, loop_moments(model, cfg, x, eps))


def test_rows_not_samples_major_are_caught_by_the_check_at_batch_one():
    model = _small(BatchMajorVAE)
    cfg = ObjectiveConfig(bound="iwae", estimator="reparam", k=3)
    x, eps = batch(model, 5, 3)
    engine = GradientMoments(model, cfg)
    m = engine(x, eps)
    decoder_layers = {"model.decoder.0", "model.decoder.2"}
    assert set(m.fallback) == decoder_layers
    assert all("autograd at B = 1" in m.fallback[n] for n in decoder_layers)
    assert_same(m, loop_moments(model, cfg, x, eps))
    assert set(engine(x, eps).fallback) == decoder_layers  # the finding stands for later calls


def test_call_with_detached_parameters_swapped_in_adds_nothing():
    model = _small(DetachedScaleVAE)
    cfg = ObjectiveConfig(bound="elbo", estimator="reparam", k=2)
    x, eps = batch(model, 5, 2)
    m = GradientMoments(model, cfg)(x, eps)
    assert m.fallback == {}
    assert_same(m, loop_moments(model, cfg, x, eps))


def test_chunk_bound_too_small_for_one_example_is_one_clear_error():
    model = _small()
    cfg = ObjectiveConfig(bound="iwae", estimator="dreg", k=2)
    x, eps = batch(model, 4, 2)
    with pytest.raises(VaezooError, match="too small for one example: layer 'model.decoder.2' needs"):
        GradientMoments(model, cfg, chunk_bytes=1000)(x, eps)
    with pytest.raises(VaezooError, match="too small for one example: the torch.func fallback"):
        GradientMoments(model, cfg, chunk_bytes=1000, hooks=False)(x, eps)
    with pytest.raises(VaezooError, match="chunk_bytes must be >= 1"):
        GradientMoments(model, cfg, chunk_bytes=0)
    with pytest.raises(VaezooError, match=r"eps must be \[K, B, d\]"):
        GradientMoments(model, cfg)(x, eps[:, :3])


def test_variance_of_mean_matches_its_formula():
    model = _small()
    cfg = ObjectiveConfig()
    x, eps = batch(model, 6, 1)
    m = GradientMoments(model, cfg)(x, eps)
    ref = loop_moments(model, cfg, x, eps)
    name = "model.decoder.2.weight"
    # (sum g^2 / B - (sum g / B)^2) / B is the population variance over the B examples, divided by B
    expected = (ref.sum_sq[name] / 6 - (ref.sum[name] / 6).square()) / 6
    assert torch.allclose(m.variance_of_mean(name).double(), expected, rtol=1e-3, atol=1e-9)
    assert float(m.network_sq_norms(list(m.sq_norms)).sum()) == pytest.approx(
        float(sum(ref.sq_norms[n].sum() for n in ref.sq_norms)), rel=1e-5
    )


# --- memory ---------------------------------------------------------------------------------------------


def _ordinary_backward(model, cfg, x, eps):
    model.zero_grad(set_to_none=True)
    Objective(cfg).estimate(model, x, eps).surrogate.mean().neg().backward()


@pytest.mark.parametrize("bound,estimator,K", [("elbo", "reparam", 1), ("iwae", "dreg", 4)])
def test_peak_memory_grows_with_b_like_a_backward_pass_not_like_per_example_gradients(bound, estimator, K):
    """Peak bytes allocated (torch's profiler, one thread: deterministic) at B = 256 and 2048. Per-example
    gradients would add 4 P bytes per example. Beyond an ordinary backward pass (activations, which grow with
    B for any method) the engine holds one layer's squared factors at a time, one chunk, and its moments
    (O(P)): its peak and its growth with B stay within 1.5x the backward's plus the chunk bound."""
    torch.set_num_threads(1)
    torch.manual_seed(5)
    model = get_model("vae", input_shape=(1, 28, 28), hidden=(64,), latent_dim=8)
    n_params = sum(p.numel() for p in model.parameters())
    cfg = ObjectiveConfig(bound=bound, estimator=estimator, k=K)
    chunk = 2**20
    engine = GradientMoments(model, cfg, chunk_bytes=chunk)
    peaks = {}
    for B in (256, 2048):
        x, eps = batch(model, B, K)
        engine(x, eps)  # the one-off check at B = 1 runs on the first call of a shape
        peaks[B] = (
            peak_bytes(lambda x=x, eps=eps: engine(x, eps)),
            peak_bytes(lambda x=x, eps=eps: _ordinary_backward(model, cfg, x, eps)),
        )
    grow_engine = peaks[2048][0] - peaks[256][0]
    grow_backward = peaks[2048][1] - peaks[256][1]
    assert grow_engine < 0.25 * 4 * n_params * (2048 - 256)  # far from a gradient per example
    assert grow_engine <= 1.5 * grow_backward + chunk, peaks
    for B, (eng, bwd) in peaks.items():
        assert eng <= 1.5 * bwd + chunk + 3 * 4 * n_params, (B, eng, bwd)  # moments: sum, squares, and slack


# --- the study's pool served by the engine ------------------------------------------------------------------


def test_study_pool_from_hooks_equals_the_vmap_pool():
    from vaezoo.data import DataConfig, load_dataset
    from vaezoo.gradnoise.measure import GradVarConfig, run_study

    data = load_dataset(DataConfig(name="digits", binarize="dynamic")).train
    torch.manual_seed(6)
    model = get_model("vae", input_shape=(1, 8, 8), hidden=(16,), latent_dim=2)
    base = {
        "batch_sizes": (4,),
        "ks": (2,),
        "k_sweep_batch": 4,
        "estimators": ("reparam", "dreg"),
        "draws": 8,
        "split": False,
        "pool": 64,
        "pool_groups": 8,
        "bootstrap": 20,
    }
    runs = {
        method: run_study(model, data, "dynamic", GradVarConfig(**base, method=method), torch.device("cpu"), False)
        for method in ("hooks", "vmap")
    }
    hooks, vmap_ = runs["hooks"].pools, runs["vmap"].pools
    assert [(p.bound, p.estimator) for p in hooks] == [("elbo", "reparam"), ("iwae", "reparam"), ("iwae", "dreg")]
    for a, b in zip(hooks, vmap_):
        assert a.info["method"] == "hooks" and a.info["fallback"] == {}
        for net, stats in b.point.items():
            for name, value in stats.items():
                assert a.point[net][name] == pytest.approx(value, rel=1e-4, abs=1e-9), (a.estimator, net, name)


def test_unknown_pool_method_is_one_clear_error():
    from vaezoo.gradnoise.measure import GradVarConfig

    with pytest.raises(VaezooError, match="unknown method 'jax'; choose from hooks, vmap"):
        GradVarConfig(method="jax")
