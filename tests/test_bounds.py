"""The bounds on the linear-Gaussian model, where every answer is known, and the units convention."""

from __future__ import annotations

import math

import torch

from vaezoo.data.linear_gaussian import analytic_elbo
from vaezoo.models import ModelConfig, build_model
from vaezoo.objectives import Objective, ObjectiveConfig


def _perturbed_model(truth, seed=0):
    """The true decoder, with an encoder that is close to but not at the true posterior."""
    torch.manual_seed(seed)
    model = build_model(truth.model_config())
    truth.set_model(model, posterior=True)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.15 * torch.randn_like(p))
    return model


def _bound(model, x, bound, k, draws, seed=0):
    g = torch.Generator().manual_seed(seed)
    obj = Objective(ObjectiveConfig(bound=bound, k=k))
    with torch.no_grad():
        vals = torch.stack([obj(model, x, g).per_datapoint.double() for _ in range(draws)])
    return vals.mean(0), vals.std(0) / math.sqrt(draws)


def test_convention_nats_per_datapoint_sum_over_pixels_mean_over_batch():
    """bound = mean over the batch of (sum over pixels of log p(x|z)) - KL summed over latents."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(16,), latent_dim=4, input_shape=(1, 4, 4)))
    x = torch.rand(6, 1, 4, 4).bernoulli()
    g = torch.Generator().manual_seed(3)
    out = Objective(ObjectiveConfig(bound="elbo", kl="analytic"))(model, x, g)
    # recompute by hand with the same noise
    g = torch.Generator().manual_seed(3)
    q = model.encode(x)
    eps = torch.randn((1, *q.mu.shape), generator=g)
    z = q.mu + q.sigma * eps
    logits = model.decode(z)[0]
    ll = (x * logits - torch.nn.functional.softplus(logits)).sum(dim=(1, 2, 3))
    kl = 0.5 * (q.mu**2 + q.sigma**2 - 1 - torch.log(q.sigma**2)).sum(-1)
    torch.testing.assert_close(out.per_datapoint, ll - kl)
    torch.testing.assert_close(out.bound, (ll - kl).mean())
    torch.testing.assert_close(out.loss, -(ll - kl).mean())
    # the batch mean, not the sum: a batch of copies of one image has that image's bound
    with torch.no_grad():
        one = Objective(ObjectiveConfig(bound="elbo", kl="analytic"))(model, x[:1].expand(50, -1, -1, -1), g)
    assert one.per_datapoint.shape == (50,)
    single = float((ll - kl)[0])
    assert abs(float(one.bound) - single) < 0.2 * abs(single)  # a batch sum would be 50 times this


def test_monte_carlo_elbo_matches_analytic_elbo(truth):
    model = _perturbed_model(truth)
    x = truth.sample(64, torch.Generator().manual_seed(1))
    exact = analytic_elbo(model, x).double().detach()
    for kl in ("analytic", "mc"):
        g = torch.Generator().manual_seed(2)
        obj = Objective(ObjectiveConfig(bound="elbo", k=1, kl=kl))
        with torch.no_grad():
            vals = torch.stack([obj(model, x, g).per_datapoint.double() for _ in range(4000)])
        mean, se = vals.mean(0), vals.std(0) / math.sqrt(len(vals))
        z = (mean - exact) / se
        assert z.abs().max() < 4.5, f"kl={kl}: max |z| = {z.abs().max():.2f}"
        assert (mean.mean() - exact.mean()).abs() < 0.01


def test_at_true_posterior_elbo_equals_log_px(truth):
    model = build_model(truth.model_config())
    truth.set_model(model, posterior=True)
    x = truth.sample(32, torch.Generator().manual_seed(5))
    torch.testing.assert_close(analytic_elbo(model, x).detach(), truth.log_marginal(x), atol=1e-4, rtol=0)
    # every importance weight is p(x) there, so even one sample gives log p(x) exactly
    out = Objective(ObjectiveConfig(bound="elbo", kl="mc"))(model, x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.per_datapoint.detach(), truth.log_marginal(x), atol=1e-3, rtol=0)


def test_iwae_rises_with_k_and_approaches_log_px(truth):
    model = _perturbed_model(truth)
    x = truth.sample(32, torch.Generator().manual_seed(1))
    log_px = truth.log_marginal(x).double().mean()
    elbo = analytic_elbo(model, x).double().mean().detach()
    means, ses = [], []
    for k in (1, 4, 16, 64, 256):
        m, se = _bound(model, x, "iwae", k, draws=200, seed=k)
        means.append(m.mean())
        ses.append(torch.sqrt((se**2).sum()) / len(se))
    gaps = [float(log_px - m) for m in means]
    # L_1 (IWAE at K=1) is the ELBO
    assert abs(float(means[0] - elbo)) < 4 * float(ses[0]) + 1e-3
    for a, b, sa, sb in zip(means, means[1:], ses, ses[1:]):
        assert b > a - 4 * torch.sqrt(sa**2 + sb**2), "IWAE_K must not fall as K grows"
    assert means[-1] > means[0] + 10 * ses[0], "IWAE_256 must clearly beat the ELBO"
    # ELBO <= IWAE_K <= log p(x), within Monte Carlo error
    for m, se in zip(means, ses):
        assert elbo - 4 * se <= m <= log_px + 4 * se + 1e-4
    assert gaps[-1] < 0.1 * gaps[0], f"gap to log p(x) should shrink: {gaps}"
