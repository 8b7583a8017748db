"""Decoder likelihoods p(x|z): Bernoulli on logits, Gaussian with fixed or learned sigma."""

from __future__ import annotations

import math

import torch
from torch import nn

from vaezoo.core.errors import VaezooError
from vaezoo.models.config import SIGMA_FLOOR
from vaezoo.models.distributions import bernoulli_logits_log_prob, gaussian_log_prob


class BernoulliLikelihood(nn.Module):
    """The decoder emits logits; images are probabilities sigmoid(logits)."""

    name = "bernoulli"

    def __init__(self, event_shape: tuple[int, ...], **_: object) -> None:
        super().__init__()
        self.event_dims = len(event_shape)

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return bernoulli_logits_log_prob(x, out, self.event_dims)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)


class GaussianLikelihood(nn.Module):
    """N(x; decoder mean, sigma^2): sigma fixed (default 1, the tutorial's 'MSE + KL'), or learned
    as one global value or one per pixel (stored as log sigma, so it stays positive). A learned sigma is
    used as max(sigma, sigma_floor): each pixel's log-density is then at most -log(sigma_floor) - log(2 pi)/2."""

    name = "gaussian"

    def __init__(self, event_shape: tuple[int, ...], sigma: float = 1.0, learn_sigma: str = "fixed",
                 sigma_floor: float = SIGMA_FLOOR) -> None:
        super().__init__()
        if not 0 < sigma < math.inf:
            raise VaezooError(f"gaussian sigma must be > 0 and finite, got {sigma}")
        if not 0 < sigma_floor < math.inf or (learn_sigma != "fixed" and sigma_floor > sigma):  # nan fails too
            raise VaezooError(f"sigma_floor must be > 0 and finite, and <= a learned sigma's start ({sigma}), got {sigma_floor}")
        shapes = {"fixed": None, "global": (), "pixel": tuple(event_shape)}
        if learn_sigma not in shapes:
            raise VaezooError(f"unknown learn_sigma '{learn_sigma}'; choose from {', '.join(shapes)}")
        self.event_dims = len(event_shape)
        self.learned = learn_sigma != "fixed"
        self.log_floor = math.log(sigma_floor)
        init = torch.full(shapes[learn_sigma] or (), math.log(sigma))
        if learn_sigma == "fixed":
            self.register_buffer("log_sigma", init)
        else:
            self.log_sigma = nn.Parameter(init)

    def effective_log_sigma(self) -> torch.Tensor:
        """log sigma as the density uses it: a learned one clamped below at log(sigma_floor) (no gradient there)."""
        return self.log_sigma.clamp_min(self.log_floor) if self.learned else self.log_sigma

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return gaussian_log_prob(x, out, self.effective_log_sigma(), self.event_dims)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out


LIKELIHOODS = {cls.name: cls for cls in (BernoulliLikelihood, GaussianLikelihood)}
