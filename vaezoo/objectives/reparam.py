"""The reparameterisation trick and the pathwise gradient estimator (Kingma & Welling 2014).

z = mu + sigma * eps with eps ~ N(0, I) moves the randomness out of q's parameters, so the gradient
of any f(z) flows through mu and sigma: grad_phi E_q[f(z)] = E_eps[grad_phi f(mu + sigma * eps)].
"""

from __future__ import annotations

import torch

from vaezoo.distributions import DiagonalGaussian
from vaezoo.objectives.parts import Estimate, LogWeight, kl_terms, log_weight


def reparameterise(q: DiagonalGaussian, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps, differentiable in mu and sigma; eps [K, B, d] broadcasts over samples."""
    return q.mu + q.sigma * eps


class Reparam:
    """Pathwise gradient of the chosen bound. With ``kl='analytic'`` the ELBO uses the closed-form KL."""

    name = "reparam"
    bounds = ("elbo", "iwae")
    kl_modes = ("analytic", "mc")

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def __call__(self, model, x, q, eps, bound) -> Estimate:
        z = reparameterise(q, eps)
        if self.cfg.kl == "analytic":
            recon, kl = kl_terms(model, x, z, q)
            value = recon - kl
            return Estimate(value=value, surrogate=recon - self.cfg.beta * kl, kl=kl)
        lw: LogWeight = log_weight(model, x, z, q)
        value = bound(lw.total)
        return Estimate(value=value, surrogate=bound(lw.weighted(self.cfg.beta)))
