"""Sticking the landing, STL (Roeder, Wu & Duvenaud 2017).

The pathwise estimator with log q(z|x) evaluated with q's parameters detached, while z keeps its
dependence on phi. This drops the score term E[grad_phi log q] (zero in expectation): unbiased for the
ELBO, and of zero variance when q equals the true posterior. Used with IWAE it is biased (Tucker et al. 2019).
"""

from __future__ import annotations

from vaezoo.objectives.base import Estimate, Estimator
from vaezoo.objectives.log_weights import log_weight
from vaezoo.objectives.reparam import reparameterise


class STL(Estimator):
    """Pathwise gradient with the score term dropped (log q evaluated at detached parameters).

    References: Roeder, Wu & Duvenaud, Sticking the Landing: Simple, Lower-Variance Gradient Estimators for
    Variational Inference, NeurIPS 2017; Tucker, Lawson, Gu & Maddison, Doubly Reparameterized Gradient
    Estimators for Monte Carlo Objectives, ICLR 2019 (its bias with IWAE).
    """

    name = "stl"
    bounds = ("elbo", "iwae")
    kl_modes = ("mc",)

    def __call__(self, model, x, q, eps, bound) -> Estimate:
        z = reparameterise(q, eps)
        lw = log_weight(model, x, z, q.detach())  # same value as log q(z), no score term in its gradient
        return Estimate(value=bound(lw.total), surrogate=bound(lw.weighted(self.beta)), log_weights=lw)
