"""Closed-form KL against Monte Carlo, the Gaussian likelihood's constant, Bernoulli logits' stability."""

from __future__ import annotations

import math

import torch

from vaezoo.models.distributions import (
    DiagonalGaussian,
    bernoulli_logits_log_prob,
    gaussian_log_prob,
    standard_normal_log_prob,
)
from vaezoo.models.likelihoods import GaussianLikelihood


def test_closed_form_kl_equals_monte_carlo_kl():
    g = torch.Generator().manual_seed(0)
    q = DiagonalGaussian(torch.randn(4, 5, generator=g, dtype=torch.float64), torch.rand(4, 5, generator=g, dtype=torch.float64) + 0.2)
    z = q.mu + q.sigma * torch.randn(200_000, 4, 5, generator=g, dtype=torch.float64)
    samples = q.log_prob(z) - standard_normal_log_prob(z)
    mc, se = samples.mean(0), samples.std(0) / math.sqrt(len(samples))
    exact = q.kl_standard_normal()
    assert ((mc - exact).abs() < 4 * se).all()
    assert (exact > 0).all()
    # and KL is 0 exactly at the prior
    assert DiagonalGaussian(torch.zeros(3), torch.ones(3)).kl_standard_normal().abs() < 1e-7


def test_gaussian_likelihood_is_mse_over_two_sigma_squared_plus_constant():
    """-log N(x; x_hat, sigma^2 I) = ||x - x_hat||^2 / (2 sigma^2) + (D/2) log(2 pi sigma^2): the tutorial's MSE + KL."""
    g = torch.Generator().manual_seed(1)
    x, xhat = torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64), torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64)
    D = 16
    for sigma in (1.0, 0.3, 2.5):
        nll = -gaussian_log_prob(x, xhat, torch.tensor(math.log(sigma), dtype=torch.float64), event_dims=3)
        expected = ((x - xhat) ** 2).sum((1, 2, 3)) / (2 * sigma**2) + 0.5 * D * math.log(2 * math.pi * sigma**2)
        torch.testing.assert_close(nll, expected)
    lik = GaussianLikelihood((1, 4, 4), sigma=1.0)
    torch.testing.assert_close(-lik.log_prob(x.float(), xhat.float()).double(),
                               ((x - xhat) ** 2).sum((1, 2, 3)) / 2 + 8 * math.log(2 * math.pi), rtol=1e-5, atol=1e-5)


def test_learned_sigma_is_a_parameter_and_fixed_is_not():
    assert [n for n, _ in GaussianLikelihood((1, 2, 2), learn_sigma="global").named_parameters()] == ["log_sigma"]
    assert GaussianLikelihood((1, 2, 2), learn_sigma="pixel").log_sigma.shape == (1, 2, 2)
    assert list(GaussianLikelihood((1, 2, 2)).parameters()) == []


def test_bernoulli_logits_match_bce_and_stay_finite_at_extreme_logits():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(5, 1, 3, 3, generator=g).bernoulli()
    logits = torch.randn(5, 1, 3, 3, generator=g) * 5
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
    torch.testing.assert_close(bernoulli_logits_log_prob(x, logits, 3), -bce)
    extreme = torch.tensor([[-200.0, 200.0]])
    ll = bernoulli_logits_log_prob(torch.tensor([[1.0, 0.0]]), extreme, 1)
    assert torch.isfinite(ll).all() and ll.item() < -399
