"""The VampPrior VAE (Tomczak & Welling 2018): the prior is a mixture of the encoder's own posteriors.

p(z) = (1/C) sum_c q(z | u_c), with C pseudo-inputs u_c: learned parameters of the input's shape, trained with
the rest. Encoder, decoder and likelihood are the VAE's; only log p(z) and the prior's samples differ.
KL(q(z|x) || p(z)) has no closed form for a mixture, so the variant trains with the sampled KL (kl='mc').

Pseudo-inputs start at 0.5 + 0.01 * N(0, 1) drawn from torch's global generator, like every other weight (the run
seed fixes them): a model knows no data set, so the paper's alternative (a random subset of training images) would
need the data here; 0.5 is the middle of the pixel range, and the small noise breaks the symmetry between components.
They are not clamped to the pixel range (the paper's hardtanh is left out).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vaezoo.models.config import ModelConfig
from vaezoo.models.distributions import LOG_2PI, DiagonalGaussian
from vaezoo.models.registry import register_model
from vaezoo.models.vae import VAE

# rows of z scored against all C components at once: bounds the [rows, C, d] temporary at 2^22 floats (16 MB)
PRIOR_CHUNK_ELEMENTS = 1 << 22


def mixture_log_prob(z: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log (1/C) sum_c N(z; mu_c, diag sigma_c^2) for z [..., d] and components mu, sigma [C, d] -> [...]."""
    c, d = mu.shape
    flat = z.reshape(-1, d)
    rows = max(1, PRIOR_CHUNK_ELEMENTS // (c * d))
    log_sigma = torch.log(sigma)
    parts = []
    for zc in flat.split(rows):
        eps = (zc[:, None, :] - mu) / sigma  # [rows, C, d]
        log_comp = -0.5 * (eps.pow(2) + LOG_2PI + 2 * log_sigma).sum(-1)
        parts.append(torch.logsumexp(log_comp, dim=-1) - math.log(c))
    return torch.cat(parts).reshape(z.shape[:-1])


@register_model("vamp", "VampPrior VAE (Tomczak & Welling 2018): p(z) a mixture of q(z|u_c) at learned pseudo-inputs; "
                "sampled KL", kl="mc")
class VampVAE(VAE):
    standard_prior = False

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.pseudo_inputs = nn.Parameter(0.5 + 0.01 * torch.randn(cfg.pseudo_inputs, *cfg.input_shape))

    def prior_components(self) -> DiagonalGaussian:
        """q(z | u_c) for every pseudo-input: mu and sigma [C, d]."""
        return self.encode(self.pseudo_inputs)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) = logsumexp_c log q(z | u_c) - log C, for z [..., d]."""
        comp = self.prior_components()
        return mixture_log_prob(z, comp.mu, comp.sigma)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean images of p(x|z) for z from the mixture: a component uniformly, then z ~ q(z | u_c)."""
        comp = self.prior_components()
        dev = generator.device if generator is not None else comp.mu.device  # draws on the generator's device
        c = torch.randint(comp.mu.shape[0], (n,), generator=generator, device=dev).to(comp.mu.device)
        eps = torch.randn(n, self.latent_dim, generator=generator, device=dev).to(comp.mu.device)
        z = comp.mu[c] + comp.sigma[c] * eps
        return self.likelihood.mean(self.decode(z))
