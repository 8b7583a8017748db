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


def outer_groups(log_w: torch.Tensor, outer: int) -> torch.Tensor:
    """[M K, B] -> [M, K, B]: the draws of each of M outer samples together (draw i is in group i // K)."""
    return log_w.reshape(outer, -1, *log_w.shape[1:])


def miwae(log_w: torch.Tensor, outer: int = 1) -> torch.Tensor:
    """MIWAE bound (Rainforth et al. 2018): the mean of M independent K-sample IWAE bounds, from M K draws [M K, B].
    M = 1 is IWAE_K and K = 1 the M-sample ELBO; for a fixed M K it lies between the two."""
    groups = outer_groups(log_w, outer)
    return (torch.logsumexp(groups, dim=1) - math.log(groups.shape[1])).mean(0)


def normalised_weights(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """w~_k = w_k / sum_j w_j over the sample dimension ``dim``, computed stably."""
    return torch.softmax(log_w, dim=dim)


BOUNDS = {"elbo": elbo, "iwae": iwae, "miwae": miwae}
