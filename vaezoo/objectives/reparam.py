"""The reparameterisation trick and the pathwise gradient estimator (Kingma & Welling 2014).

z = mu + sigma * eps with eps ~ N(0, I) moves the randomness out of q's parameters, so the gradient
of any f(z) flows through mu and sigma: grad_phi E_q[f(z)] = E_eps[grad_phi f(mu + sigma * eps)].
"""

from __future__ import annotations

import torch

from vaezoo.models.distributions import DiagonalGaussian
from vaezoo.objectives.base import Estimate, Estimator
from vaezoo.objectives.log_weights import LogWeight, log_weight


def reparameterise(q: DiagonalGaussian, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps, differentiable in mu and sigma; eps [K, B, d] broadcasts over samples."""
    return q.mu + q.sigma * eps


class Reparam(Estimator):
    """Pathwise gradient of the chosen bound. With ``kl='analytic'`` the ELBO uses the closed-form KL.

    References: Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014; Rezende, Mohamed & Wierstra,
    Stochastic Backpropagation and Approximate Inference in Deep Generative Models, ICML 2014.
    """

    name = "reparam"
    bounds = ("elbo", "iwae", "miwae")
    kl_modes = ("analytic", "mc")

    def __call__(self, model, x, q, eps, bound) -> Estimate:
        z = reparameterise(q, eps)
        if self.cfg.kl == "analytic":
            recon = model.log_likelihood(x, z).mean(0)
            kl, penalised = self.analytic_kl(q)
            return Estimate(value=recon - kl, surrogate=recon - self.beta * penalised, kl=kl, kl_penalised=penalised)
        lw: LogWeight = log_weight(model, x, z, q)
        value = bound(lw.total)
        return Estimate(value=value, surrogate=bound(lw.weighted(self.beta)), log_weights=lw)
