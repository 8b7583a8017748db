"""The score-function (REINFORCE) estimator (Williams 1992; for VAEs, Paisley et al. 2012).

grad_phi E_q[f(z)] = E_q[f(z) grad_phi log q(z|x)], with z treated as a constant. A baseline b that does
not depend on the current z keeps it unbiased: here an exponential moving average of f over past steps
(``baseline_decay`` > 0), updated only after the current step's surrogate is formed.
"""

from __future__ import annotations

import torch

from vaezoo.objectives.base import Estimate, Estimator
from vaezoo.objectives.log_weights import log_weight
from vaezoo.objectives.reparam import reparameterise


class Score(Estimator):
    """Score-function gradient of the chosen bound, with an optional moving-average baseline.

    References: Williams, Simple Statistical Gradient-Following Algorithms for Connectionist Reinforcement
    Learning, Machine Learning 1992; Paisley, Blei & Jordan, Variational Bayesian Inference with Stochastic
    Search, ICML 2012; Mnih & Gregor, Neural Variational Inference and Learning in Belief Networks, ICML 2014.
    """

    name = "score"
    bounds = ("elbo", "iwae")
    kl_modes = ("analytic", "mc")

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.baseline: float | None = None

    def __call__(self, model, x, q, eps, bound) -> Estimate:
        z = reparameterise(q, eps).detach()  # no path from z back to phi
        log_q = q.log_prob(z)  # [K, B], carries grad_phi log q
        value, plain, signal, kl, penalised, lw = self._terms(model, x, z, q, bound)
        b = 0.0 if self.baseline is None else self.baseline
        score = ((signal - b).detach() * log_q).mean(0) if self.cfg.bound == "elbo" else ((signal - b).detach() * log_q).sum(0)
        self._update_baseline(signal)
        return Estimate(value=value, surrogate=plain + score, kl=kl, kl_penalised=penalised,
                        log_weights=lw if kl is None else None)

    def signal(self, model, x, q, eps, bound) -> torch.Tensor:
        """The learning signal f [K, B] that multiplies grad log q (what the baseline is subtracted from)."""
        return self._terms(model, x, reparameterise(q, eps).detach(), q, bound)[2]

    def _terms(self, model, x, z, q, bound):
        """(the bound's value, the plain part of the surrogate, the learning signal, the analytic KL and the KL
        penalised, each None where the KL is sampled, and the log weights)."""
        lw = log_weight(model, x, z, q)
        if self.cfg.kl == "analytic":
            kl, penalised = self.analytic_kl(q)
            f = lw.log_px_z  # [K, B]: the KL's gradient is exact, only E_q[log p(x|z)] needs the trick
            value = f.mean(0) - kl
            plain = f.mean(0) - self.beta * penalised
            signal = f
        else:
            kl = penalised = None  # sampled KL: it is inside the log weights
            f = lw.weighted(self.beta)
            value = bound(lw.total)
            plain = bound(f)
            # The K-sample ELBO is a sum of independent terms: each log q(z_k) pairs with its own f_k.
            # IWAE's bound couples the samples: every log q(z_k) pairs with the whole estimate.
            signal = f if self.cfg.bound == "elbo" else plain.unsqueeze(0).expand_as(f)
        return value, plain, signal, kl, penalised, lw

    def _update_baseline(self, signal: torch.Tensor) -> None:
        d = self.cfg.baseline_decay
        if d <= 0:
            return
        m = float(signal.detach().mean())
        self.baseline = m if self.baseline is None else d * self.baseline + (1 - d) * m

    def state_dict(self) -> dict:
        return {"baseline": self.baseline}

    def load_state_dict(self, state: dict) -> None:
        self.baseline = state.get("baseline")
