"""Log-densities the models score with: diagonal Gaussian, standard-normal prior, Bernoulli on logits.

Every log-density here is summed over its event dimensions (pixels or latent units) and keeps
every leading (sample, batch) dimension, so bounds can be formed by the objectives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


@dataclass
class DiagonalGaussian:
    """q(z|x) = N(mu, diag sigma^2); ``log_sigma`` is kept for exact log-densities and KL."""

    mu: torch.Tensor
    sigma: torch.Tensor

    @property
    def log_sigma(self) -> torch.Tensor:
        return torch.log(self.sigma)

    def detach(self) -> DiagonalGaussian:
        """Same distribution with its parameters cut from the graph (STL and DReG need this)."""
        return DiagonalGaussian(self.mu.detach(), self.sigma.detach())

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z), summed over the latent dimension; z may carry leading sample dims."""
        eps = (z - self.mu) / self.sigma
        return -0.5 * (eps.pow(2) + LOG_2PI + 2 * self.log_sigma).sum(-1)

    def kl_per_unit(self) -> torch.Tensor:
        """KL(q || N(0, I)) in closed form (Kingma & Welling 2014, App. B), one value per latent unit."""
        return 0.5 * (self.mu.pow(2) + self.sigma.pow(2) - 1 - 2 * self.log_sigma)

    def kl_standard_normal(self) -> torch.Tensor:
        """KL(q || N(0, I)) summed over latents."""
        return self.kl_per_unit().sum(-1)


@dataclass
class PointMass:
    """A deterministic code, for the plain autoencoder: it has no density and no KL."""

    mu: torch.Tensor


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def bernoulli_logits_log_prob(x: torch.Tensor, logits: torch.Tensor, event_dims: int) -> torch.Tensor:
    """sum_i [x_i l_i - softplus(l_i)]: exact and stable for any logit (no sigmoid, no clamping)."""
    ll = x * logits - F.softplus(logits)
    return ll.flatten(-event_dims).sum(-1)


def gaussian_log_prob(
    x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor, event_dims: int
) -> torch.Tensor:
    """log N(x; mean, sigma^2) with its normalising constant, summed over the event dimensions."""
    ll = -0.5 * (((x - mean) * torch.exp(-log_sigma)).pow(2) + LOG_2PI + 2 * log_sigma)
    return ll.flatten(-event_dims).sum(-1)
