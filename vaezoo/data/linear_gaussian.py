"""A model with every answer known: p(z) = N(0, I_d), p(x|z) = N(W z + b, s^2 I_D).

Then p(x) = N(b, W W^T + s^2 I) and p(z|x) = N(A^-1 W^T (x - b) / s^2, A^-1), A = I + W^T W / s^2.
W has orthogonal columns, so A is diagonal and a diagonal-Gaussian q can equal the true posterior;
with a linear encoder it can do so for every x at once. Used by tests and the SNR studies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaezoo.core.errors import VaezooError
from vaezoo.models.distributions import LOG_2PI
from vaezoo.models.vae import MIN_SCALE


@dataclass
class LinearGaussian:
    W: torch.Tensor  # [D, d]
    b: torch.Tensor  # [D]
    s: float

    @classmethod
    def default(cls, D: int = 12, d: int = 3, s: float = 0.7, seed: int = 7) -> LinearGaussian:
        g = torch.Generator().manual_seed(seed)
        Q, _ = torch.linalg.qr(torch.randn(D, d, generator=g, dtype=torch.float64))
        scales = torch.linspace(2.0, 0.8, d, dtype=torch.float64)
        b = torch.randn(D, generator=g, dtype=torch.float64) * 0.5
        return cls((Q * scales).float(), b.float(), s)

    @property
    def D(self) -> int:
        return self.W.shape[0]

    @property
    def d(self) -> int:
        return self.W.shape[1]

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, self.d, generator=generator)
        return z @ self.W.T + self.b + self.s * torch.randn(n, self.D, generator=generator)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) exactly, per row of x [N, D] (float64 inside)."""
        W, b = self.W.double(), self.b.double()
        cov = W @ W.T + self.s**2 * torch.eye(self.D, dtype=torch.float64)
        dist = torch.distributions.MultivariateNormal(b, covariance_matrix=cov)
        return dist.log_prob(x.double()).float()

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean [N, d], standard deviation [d]) of the true posterior p(z|x)."""
        A = torch.eye(self.d) + self.W.T @ self.W / self.s**2
        Ainv = torch.linalg.inv(A)
        mean = (x - self.b) @ self.W @ Ainv.T / self.s**2
        return mean, torch.sqrt(torch.diagonal(Ainv))

    def model_config(self, **overrides):
        from vaezoo.models.config import ModelConfig

        base = dict(backbone="linear", latent_dim=self.d, likelihood="gaussian", sigma=self.s, input_shape=(self.D,))
        return ModelConfig(**{**base, **overrides})

    @torch.no_grad()
    def set_model(self, model, posterior: bool = True) -> None:
        """Load the true decoder into a ``linear`` VAE, and (optionally) the exact posterior into its encoder."""
        enc, dec = model.encoder[-1], model.decoder[0]
        dec.weight.copy_(self.W)
        dec.bias.copy_(self.b)
        if posterior:
            A = torch.eye(self.d) + self.W.T @ self.W / self.s**2
            Ainv = torch.linalg.inv(A)
            M = Ainv @ self.W.T / self.s**2  # mean = M (x - b)
            std = torch.sqrt(torch.diagonal(Ainv))
            raw = torch.log(torch.expm1(std - MIN_SCALE))  # inverse of softplus(.) + MIN_SCALE
            enc.weight.zero_()
            enc.bias.zero_()
            enc.weight[: self.d].copy_(M)
            enc.bias[: self.d].copy_(-M @ self.b)
            enc.bias[self.d :].copy_(raw)


def analytic_elbo(model, x: torch.Tensor) -> torch.Tensor:
    """The ELBO of a ``linear`` VAE with a fixed-sigma Gaussian decoder, in closed form, per datapoint.

    E_q[log p(x|z)] = -[||x - W mu - b||^2 + sum_j sigma_j^2 ||W_j||^2] / (2 s^2) - (D/2) log(2 pi s^2),
    minus the closed-form KL. Differentiable in the model's parameters: its gradient is the exact one.
    """
    if model.cfg.backbone != "linear" or model.cfg.likelihood != "gaussian" or model.cfg.learn_sigma == "pixel":
        raise VaezooError("analytic_elbo needs a 'linear' VAE with a Gaussian decoder of one sigma")
    q = model.encode(x)
    dec = model.decoder[0]
    W, b = dec.weight, dec.bias
    log_s = model.likelihood.effective_log_sigma()
    s2 = torch.exp(2 * log_s)
    D = x.shape[-1]
    resid = (x - q.mu @ W.T - b).pow(2).sum(-1) + (q.sigma.pow(2) * W.pow(2).sum(0)).sum(-1)
    expected_ll = -resid / (2 * s2) - 0.5 * D * (LOG_2PI + 2 * log_s)
    return expected_ll - q.kl_standard_normal()


__all__ = ["LinearGaussian", "analytic_elbo"]
