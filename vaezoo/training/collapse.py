"""Posterior-collapse diagnostics: active and borderline units, KL per unit, the mutual information I(x; z) under
the aggregate posterior, and a bound in bits per dimension. Pure functions of encoder outputs, so each can be
checked on synthetic posteriors whose answer is known (tests/test_collapse.py)."""

from __future__ import annotations

import math

import torch

from vaezoo.models.distributions import LOG_2PI

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016: unit u is active if Cov_x(E_q[z_u | x]) > 0.01
BORDERLINE = 0.1  # a unit whose Cov_x(mu_u) is within 10% of the threshold is reported as borderline


def active_mask(mu_variance: torch.Tensor) -> torch.Tensor:
    """Which units are active: Cov_x(E_q[z_u | x]) = Var_x(mu_u(x)) above the threshold (Burda et al. 2016)."""
    return mu_variance > ACTIVE_UNIT_THRESHOLD


def active_units(mu_variance: torch.Tensor) -> int:
    """How many units are active (``active_mask``)."""
    return int(active_mask(mu_variance).sum())


def borderline_units(mu_variance: torch.Tensor) -> list[int]:
    """Indices of units within 10% of the threshold either way: one more step of training, or another test split,
    could move them across it, so a count that differs by these is no difference."""
    near = (mu_variance - ACTIVE_UNIT_THRESHOLD).abs() <= BORDERLINE * ACTIVE_UNIT_THRESHOLD
    return [int(i) for i in near.nonzero().flatten()]


def _log_q_pairs(z: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """[M, N]: log q(z_m | x_n) for every sample z_m [M, d] under every point's diagonal Gaussian [N, d]."""
    eps = (z[:, None, :] - mu[None]) * torch.exp(-log_sigma)[None]
    return -0.5 * (eps.pow(2) + LOG_2PI + 2 * log_sigma[None]).sum(-1)


@torch.no_grad()
def aggregate_posterior_mi(mu: torch.Tensor, sigma: torch.Tensor, generator=None, chunk: int = 256) -> float:
    """I(x; z) = E_x[KL(q(z|x) || q(z))] under the aggregate posterior q(z) = (1/N) sum_n q(z|x_n) of N points, in
    nats (Hoffman & Johnson 2016), by He et al. 2019's estimator: one z_i ~ q(z|x_i) per point,
    mean_i [log q(z_i|x_i) - log (1/N) sum_n q(z_i|x_n)]. Both terms are scored at the same z_i, so a q that does not
    depend on x gives exactly 0. Biased for small N and never above log N: report N beside it.

    References: Hoffman & Johnson, ELBO surgery, NeurIPS 2016 workshop; He, Spokoyny, Neubig & Berg-Kirkpatrick,
    Lagging Inference Networks and Posterior Collapse in Variational Autoencoders, ICLR 2019.
    """
    mu, sigma = mu.double(), sigma.double()
    log_sigma = torch.log(sigma)
    n = len(mu)
    z = mu + sigma * torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    terms = []
    for i in range(0, n, chunk):
        pairs = _log_q_pairs(z[i : i + chunk], mu, log_sigma)  # [m, N]
        own = pairs.diagonal(offset=i)  # log q(z_j | x_j) for the chunk's own points
        terms.append(own - (torch.logsumexp(pairs, 1) - math.log(n)))
    return float(torch.cat(terms).mean())


def bits_per_dim(bound: float, dims: int) -> float:
    """-bound / (D ln 2): a bound in nats per datapoint as bits per pixel (the convention of image models)."""
    return -bound / (dims * math.log(2))


def summary(report: dict) -> list[str]:
    """The collapse lines ``vaezoo eval`` prints under its JSON."""
    lines = [f"active units: {report['active_units']} of {len(report['mu_variance_per_unit'])} "
             f"(Var_x mu_u > {ACTIVE_UNIT_THRESHOLD}); borderline (within 10%): {report['borderline_units'] or 'none'}"]
    if "mi" in report:
        lines.append(f"I(x; z) under the aggregate posterior: {report['mi']:.3f} nats over N = {report['mi_n']} points "
                     f"(at most log N = {math.log(report['mi_n']):.2f})")
    if "elbo_bits_per_dim" in report:
        lines.append(f"ELBO: {report['elbo']:.3f} nats = {report['elbo_bits_per_dim']:.4f} bits per dimension")
    if "kl_per_unit" in report:
        lines.append("KL per unit (nats): " + " ".join(f"{v:.3f}" for v in report["kl_per_unit"]))
    return lines
