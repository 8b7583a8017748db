"""Gradient estimators: unbiased where theory says so (mean of many draws within 4 standard errors of the
true gradient), STL's zero variance at the true posterior, and refusals of combinations that make no sense."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import flat_grad, grad_draws

from vaezoo.core.errors import VaezooError
from vaezoo.data.linear_gaussian import analytic_elbo
from vaezoo.models import build_model, get_model
from vaezoo.objectives import Objective, ObjectiveConfig


def _model(truth, seed=0, scale=0.3):
    torch.manual_seed(seed)
    model = build_model(truth.model_config())
    truth.set_model(model, posterior=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


def _true_elbo_grad(model, x):
    model.zero_grad(set_to_none=True)
    analytic_elbo(model, x).mean().backward()
    return flat_grad(model).double()


def _z_scores(draws, target):
    mean = draws.mean(0)
    se = draws.std(0) / math.sqrt(len(draws))
    return (mean - target) / se.clamp_min(1e-12), se


@pytest.mark.parametrize(
    "estimator,kl,draws",
    [("reparam", "analytic", 2000), ("reparam", "mc", 2000), ("stl", "mc", 2000), ("score", "analytic", 6000), ("score", "mc", 6000)],
)
def test_elbo_estimators_are_unbiased(truth, estimator, kl, draws):
    model = _model(truth)
    x = truth.sample(8, torch.Generator().manual_seed(1))
    target = _true_elbo_grad(model, x)
    obj = Objective(ObjectiveConfig(bound="elbo", estimator=estimator, kl=kl, baseline_decay=0.0))
    g = grad_draws(model, obj, x, draws, seed=11)
    z, se = _z_scores(g, target)
    assert z.abs().max() < 4.0, f"{estimator}/{kl}: max |z| {z.abs().max():.2f}"
    assert torch.isfinite(se).all()


def test_score_with_moving_baseline_is_unbiased_and_lower_variance(truth):
    model = _model(truth)
    x = truth.sample(8, torch.Generator().manual_seed(1))
    target = _true_elbo_grad(model, x)
    plain = grad_draws(model, Objective(ObjectiveConfig(estimator="score", kl="mc", baseline_decay=0.0)), x, 4000, seed=3)
    based = grad_draws(model, Objective(ObjectiveConfig(estimator="score", kl="mc", baseline_decay=0.9)), x, 4000, seed=3)
    z, _ = _z_scores(based[100:], target)  # after the moving average has warmed up
    assert z.abs().max() < 4.0
    assert based[100:].var(0).sum() < 0.5 * plain.var(0).sum()


def test_unbiasedness_check_has_power(truth):
    """The same check rejects a gradient of another objective (IWAE K=8 is not the ELBO's gradient)."""
    model = _model(truth)
    x = truth.sample(8, torch.Generator().manual_seed(1))
    target = _true_elbo_grad(model, x)
    g = grad_draws(model, Objective(ObjectiveConfig(bound="iwae", k=8)), x, 2000, seed=11)
    z, _ = _z_scores(g, target)
    assert z.abs().max() > 10


@pytest.mark.parametrize("estimator,draws", [("dreg", 2000), ("score", 8000)])
def test_iwae_estimators_agree_with_reparam(truth, estimator, draws):
    """No closed form for IWAE's gradient: unbiased estimators must agree with the pathwise one."""
    model = _model(truth)
    x = truth.sample(8, torch.Generator().manual_seed(1))
    ref = grad_draws(model, Objective(ObjectiveConfig(bound="iwae", k=4)), x, 4000, seed=5)
    other = grad_draws(model, Objective(ObjectiveConfig(bound="iwae", k=4, estimator=estimator, baseline_decay=0.0)), x, draws, seed=6)
    se = torch.sqrt(ref.var(0) / len(ref) + other.var(0) / len(other))
    z = (ref.mean(0) - other.mean(0)) / se.clamp_min(1e-12)
    assert z.abs().max() < 4.0, f"{estimator}: max |z| {z.abs().max():.2f}"


def _encoder_slice(model):
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    return slice(0, n_enc)  # encoder parameters come first in model.parameters()


def test_stl_has_zero_variance_at_true_posterior(truth):
    model = build_model(truth.model_config())
    truth.set_model(model, posterior=True)
    x = truth.sample(8, torch.Generator().manual_seed(1))
    enc = _encoder_slice(model)
    assert list(model.parameters())[0] is model.encoder[-1].weight
    stl = grad_draws(model, Objective(ObjectiveConfig(estimator="stl")), x, 200, seed=2)[:, enc]
    rep = grad_draws(model, Objective(ObjectiveConfig(estimator="reparam", kl="mc")), x, 200, seed=2)[:, enc]
    assert rep.var(0).sum() > 1e-2
    assert stl.var(0).sum() < 1e-8 * rep.var(0).sum()
    # DReG inherits the property for IWAE
    dreg = grad_draws(model, Objective(ObjectiveConfig(bound="iwae", k=4, estimator="dreg")), x, 200, seed=2)[:, enc]
    assert dreg.var(0).sum() < 1e-8 * rep.var(0).sum()


def test_dreg_decoder_gradient_is_iwae_decoder_gradient(truth):
    """With the same noise, DReG's decoder gradient equals the pathwise IWAE decoder gradient exactly."""
    model = _model(truth)
    x = truth.sample(8, torch.Generator().manual_seed(1))
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    a = grad_draws(model, Objective(ObjectiveConfig(bound="iwae", k=6)), x, 3, seed=9)[:, n_enc:]
    b = grad_draws(model, Objective(ObjectiveConfig(bound="iwae", k=6, estimator="dreg")), x, 3, seed=9)[:, n_enc:]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"bound": "elbo", "estimator": "dreg"}, "does not apply to bound 'elbo'"),
        ({"bound": "iwae", "k": 3, "kl": "analytic"}, "kl='analytic' does not apply"),
        ({"bound": "elbo", "estimator": "stl", "kl": "analytic"}, "kl='analytic' does not apply"),
        ({"bound": "iwae", "beta": 2.0}, "beta != 1"),
        ({"k": 0}, "k .* must be >= 1"),
        ({"estimator": "magic"}, "unknown estimator"),
        ({"bound": "recon", "estimator": "score"}, "has no latent noise"),
    ],
)
def test_nonsense_combinations_are_refused(kwargs, match):
    with pytest.raises(VaezooError, match=match):
        ObjectiveConfig(**kwargs)


def test_elbo_on_an_autoencoder_is_refused():
    ae = get_model("ae", hidden=(8,), latent_dim=2, input_shape=(4,))
    with pytest.raises(VaezooError, match="needs a stochastic encoder"):
        Objective(ObjectiveConfig(bound="iwae", k=2, estimator="dreg")).check_model(ae)
    vae = get_model("vae", hidden=(8,), latent_dim=2, input_shape=(4,))
    with pytest.raises(VaezooError, match="needs a deterministic autoencoder"):
        Objective(ObjectiveConfig(bound="recon")).check_model(vae)
