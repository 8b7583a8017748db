"""The bounds, as functions of the log importance weights log w = log p(x, z) - log q(z|x), z ~ q.

log_w has shape [K, B] (K samples per datapoint); each bound returns one value per datapoint [B],
in nats. Averaging over the batch happens once, in ``Objective``.
"""

from __future__ import annotations

import math

import torch


def elbo(log_w: torch.Tensor) -> torch.Tensor:
    """K-sample ELBO: (1/K) sum_k log w_k. Same expectation as the 1-sample ELBO, latent noise / K."""
    return log_w.mean(0)


def iwae(log_w: torch.Tensor) -> torch.Tensor:
    """IWAE bound (Burda et al. 2016): logsumexp_k(log w_k) - log K.  L_1 <= L_K <= L_{K+1} <= log p(x)."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def normalised_weights(log_w: torch.Tensor) -> torch.Tensor:
    """w~_k = w_k / sum_j w_j over the sample dimension, computed stably."""
    return torch.softmax(log_w, dim=0)


BOUNDS = {"elbo": elbo, "iwae": iwae}
