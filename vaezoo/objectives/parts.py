"""Pieces shared by the estimators: log-weights split into their terms, and an estimate's two outputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaezoo.distributions import DiagonalGaussian


@dataclass
class Estimate:
    """``value``: the bound per datapoint [B] (what is logged); ``surrogate``: per datapoint [B],
    whose gradient is the estimator's (the loss is -mean(surrogate)). Never log the surrogate."""

    value: torch.Tensor
    surrogate: torch.Tensor
    kl: torch.Tensor | None = None  # closed-form KL per datapoint, where the estimator computed it anyway


@dataclass
class LogWeight:
    """log w = log p(x|z) + log p(z) - log q(z|x), each [K, B]."""

    log_px_z: torch.Tensor
    log_pz: torch.Tensor
    log_qz: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.log_px_z + self.log_pz - self.log_qz

    def weighted(self, beta: float) -> torch.Tensor:
        """log p(x|z) + beta (log p(z) - log q(z)): the beta-VAE objective's Monte Carlo form."""
        if beta == 1.0:
            return self.total
        return self.log_px_z + beta * (self.log_pz - self.log_qz)


def log_weight(model, x: torch.Tensor, z: torch.Tensor, q_density: DiagonalGaussian) -> LogWeight:
    """Score z [K, B, d] under the model; ``q_density`` may be q itself or q with detached parameters."""
    return LogWeight(model.log_likelihood(x, z), model.log_prior(z), q_density.log_prob(z))


def kl_terms(model, x: torch.Tensor, z: torch.Tensor, q: DiagonalGaussian) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean_k log p(x|z_k), KL(q || p(z))) per datapoint, the KL in closed form."""
    return model.log_likelihood(x, z).mean(0), q.kl_standard_normal()
