"""Decoder likelihoods p(x|z): Bernoulli on logits, Gaussian with fixed or learned sigma."""

from __future__ import annotations

import math

import torch
from torch import nn

from vaezoo.core.errors import VaezooError
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
    as one global value or one per pixel (stored as log sigma, so it stays positive)."""

    name = "gaussian"

    def __init__(self, event_shape: tuple[int, ...], sigma: float = 1.0, learn_sigma: str = "fixed") -> None:
        super().__init__()
        if sigma <= 0:
            raise VaezooError(f"gaussian sigma must be > 0, got {sigma}")
        shapes = {"fixed": None, "global": (), "pixel": tuple(event_shape)}
        if learn_sigma not in shapes:
            raise VaezooError(f"unknown learn_sigma '{learn_sigma}'; choose from {', '.join(shapes)}")
        self.event_dims = len(event_shape)
        init = torch.full(shapes[learn_sigma] or (), math.log(sigma))
        if learn_sigma == "fixed":
            self.register_buffer("log_sigma", init)
        else:
            self.log_sigma = nn.Parameter(init)

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return gaussian_log_prob(x, out, self.log_sigma, self.event_dims)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out


LIKELIHOODS = {cls.name: cls for cls in (BernoulliLikelihood, GaussianLikelihood)}
