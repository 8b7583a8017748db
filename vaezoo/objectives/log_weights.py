"""The log importance weights log w = log p(x|z) + log p(z) - log q(z|x), kept split into their terms
(the beta-VAE weighting and the closed-form-KL estimators need the parts)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaezoo.models.distributions import DiagonalGaussian


@dataclass
class LogWeight:
    """log w = log p(x|z) + log p(z) - log q(z|x), each [K, B]."""

    log_px_z: torch.Tensor
    log_pz: torch.Tensor
    log_qz: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.log_px_z + self.log_pz - self.log_qz

    def sampled_kl(self) -> torch.Tensor:
        """KL(q || p) per datapoint estimated from these draws (the mean of log q - log p), for the logs only."""
        return (self.log_qz - self.log_pz).detach().mean(0)

    def weighted(self, beta: float) -> torch.Tensor:
        """log p(x|z) + beta (log p(z) - log q(z)): the beta-VAE objective's Monte Carlo form."""
        if beta == 1.0:
            return self.total
        return self.log_px_z + beta * (self.log_pz - self.log_qz)


def log_weight(model, x: torch.Tensor, z: torch.Tensor, q_density: DiagonalGaussian) -> LogWeight:
    """Score z [K, B, d] under the model; ``q_density`` may be q itself or q with detached parameters."""
    return LogWeight(model.log_likelihood(x, z), model.log_prior(z), q_density.log_prob(z))

