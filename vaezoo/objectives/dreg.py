"""Doubly reparameterised gradients, DReG, for the IWAE bound (Tucker, Lawson, Gu & Maddison 2019), and for MIWAE's
mean of M such bounds (each outer group of K draws weighted within itself, the M groups averaged).

Encoder: grad_phi L_K = E[ sum_k w~_k^2 d log w_k / d z_k  d z_k / d phi ], with log w_k computed from q's
detached parameters as in STL. Decoder: the ordinary IWAE gradient sum_k w~_k grad_theta log w_k.

One surrogate gives both: sum_k sg(w~_k^2) log w_k(z_k) has the right encoder gradient but weights the
decoder by w~^2; the term sum_k sg(w~_k - w~_k^2) log p(x | sg(z_k)) tops the decoder up to w~_k and gives
the encoder nothing. It costs a second decoder pass, and stays a pure function (torch.func can vmap it). A learned
prior (the VampPrior) is topped up the same way, with log p(sg(z_k)): its parameters, and the encoder's through the
pseudo-inputs, enter log w other than through z, so DReG's identity does not cover them.
"""

from __future__ import annotations

from vaezoo.objectives.base import Estimate, Estimator
from vaezoo.objectives.bounds import normalised_weights, outer_groups
from vaezoo.objectives.log_weights import log_weight
from vaezoo.objectives.reparam import reparameterise


class DReG(Estimator):
    """Doubly reparameterised encoder gradient of the IWAE bound; the ordinary IWAE gradient for the decoder.

    Reference: Tucker, Lawson, Gu & Maddison, Doubly Reparameterized Gradient Estimators for Monte Carlo
    Objectives, ICLR 2019.
    """

    name = "dreg"
    bounds = ("iwae", "miwae")
    kl_modes = ("mc",)

    def __call__(self, model, x, q, eps, bound) -> Estimate:
        z = reparameterise(q, eps)
        weights = log_weight(model, x, z, q.detach())
        log_w = weights.total  # [M K, B] (M = 1 for IWAE)
        m = self.cfg.m
        lw = outer_groups(log_w, m)  # [M, K, B]
        wt = normalised_weights(lw, dim=1).detach()
        encoder_part = (wt.pow(2) * lw).sum(1).mean(0)
        topped = model.log_likelihood(x, z.detach())
        if not getattr(model, "standard_prior", True):
            # a learned prior (the VampPrior: the encoder at pseudo-inputs) is a term of log w whose parameters,
            # phi's among them, act other than through z: like the decoder's, their gradient needs w~, not w~^2
            topped = topped + model.log_prior(z.detach())
        decoder_topup = ((wt - wt.pow(2)) * outer_groups(topped, m)).sum(1).mean(0)
        return Estimate(value=bound(log_w), surrogate=encoder_part + decoder_topup, log_weights=weights)
