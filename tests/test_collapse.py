"""Collapse diagnostics: each checked where its answer is known (synthetic posteriors), then on trained models:
beta = 64 leaves fewer active units and less I(x; z) than beta = 1 on the same data and seed."""

from __future__ import annotations

import math

import pytest
import torch

from vaezoo.training.collapse import (
    active_units,
    aggregate_posterior_mi,
    bits_per_dim,
    borderline_units,
    summary,
)


def test_active_and_borderline_units_around_the_threshold():
    var = torch.tensor([0.0085, 0.0095, 0.0105, 0.0115, 0.02, 0.0, 0.0109, 0.0091], dtype=torch.float64)
    assert active_units(var) == 4  # above 0.01: 0.0105, 0.0115, 0.02, 0.0109
    assert borderline_units(var) == [1, 2, 6, 7]  # within 10% of 0.01 either way: [0.009, 0.011]


def test_mi_is_zero_when_q_does_not_depend_on_x():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(1, 5, generator=g).expand(500, 5)
    sigma = torch.rand(1, 5, generator=g).add(0.2).expand(500, 5)
    assert aggregate_posterior_mi(mu, sigma, torch.Generator().manual_seed(1)) == pytest.approx(0, abs=1e-9)


def test_mi_of_a_linear_gaussian_encoder_matches_its_closed_form():
    """x ~ N(0, I_2), q(z|x) = N(a x, s^2 I): q(z) = N(0, (a^2 + s^2) I), so I(x; z) = d/2 log(1 + a^2/s^2).
    N = 4000 keeps the estimator's small-N bias (below log N = 8.3) and its noise (~0.02) under the tolerance."""
    a, s, n, d = 1.0, 0.5, 4000, 2
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    exact = d / 2 * math.log(1 + a**2 / s**2)
    mi = aggregate_posterior_mi(a * x, torch.full((n, d), s), torch.Generator().manual_seed(1))
    assert mi == pytest.approx(exact, abs=0.08)


def test_mi_reaches_log_n_when_every_posterior_is_a_point_apart():
    n = 300
    mu = torch.arange(n, dtype=torch.float64)[:, None] * torch.ones(1, 3)
    mi = aggregate_posterior_mi(mu, torch.full((n, 3), 1e-3), torch.Generator().manual_seed(0), chunk=64)
    assert mi == pytest.approx(math.log(n), abs=1e-6)


def test_bits_per_dim_is_nats_over_d_ln2():
    assert bits_per_dim(-64 * math.log(2), 64) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def digits_by_beta(tmp_path_factory):
    """Two digits VAEs, same data, seed and steps, beta = 1 and 64; their collapse diagnostics on the test set."""
    from vaezoo.data.datasets import eval_binarized, load_dataset
    from vaezoo.training import load_run_model
    from vaezoo.training.config import resolve_config
    from vaezoo.training.evaluate import posterior_stats
    from vaezoo.training.loop import train

    out = {}
    for beta in (1.0, 64.0):
        user = {"model": {"hidden": [64, 32], "latent_dim": 8}, "data": {"name": "digits"}, "batch_size": 32,
                "optim": {"lr": 3e-3, "fused": False}, "steps": 200, "eval_every": 200, "checkpoint_every": 200, "eval_k": 8, "objective": {"beta": beta}}
        run = tmp_path_factory.mktemp("beta") / "run"
        train(resolve_config(user, (1, 8, 8)), run, track=False, progress=False)
        model, cfg = load_run_model(run)
        x = eval_binarized(load_dataset(cfg.data).test, cfg.data.binarize)
        out[beta] = posterior_stats(model.eval(), x, generator=torch.Generator().manual_seed(0))
    return out


def test_beta_64_leaves_fewer_active_units_and_less_information_than_beta_1(digits_by_beta):
    low, high = digits_by_beta[1.0], digits_by_beta[64.0]
    assert high["active_units"] < low["active_units"]
    assert high["mi"] < low["mi"] - 0.25 and high["kl"] < low["kl"]
    # beta = 64 has collapsed: I(x; z) ~ 0 (the estimator may dip just below 0); beta = 1's is under log N
    assert low["mi_n"] == high["mi_n"] == 359 and abs(high["mi"]) < 0.05 and low["mi"] <= math.log(359)
    report = {**low, "elbo": -30.0, "elbo_bits_per_dim": bits_per_dim(-30.0, 64)}
    text = "\n".join(summary(report))
    assert f"active units: {low['active_units']} of 8" in text and "I(x; z)" in text and "bits per dimension" in text
