"""The Gaussian-latent model shared by the VAE, beta-VAE and IWAE variants.

q(z|x) = N(mu(x), diag sigma(x)^2), sigma = softplus(.) + 1e-4 so it never reaches 0 or overflows;
p(z) = N(0, I); p(x|z) from the chosen likelihood. The variants (vae, beta-vae, iwae, miwae) differ only in the
objective they are trained with (see the registry entries), never in code here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vaezoo.core.errors import VaezooError
from vaezoo.models.backbones import build_backbone, output_layer
from vaezoo.models.config import ModelConfig
from vaezoo.models.distributions import DiagonalGaussian, standard_normal_log_prob
from vaezoo.models.likelihoods import LIKELIHOODS
from vaezoo.models.registry import register_model

MIN_SCALE = 1e-4


class LatentModel(nn.Module):
    """What every model shares: a decoder, a likelihood, a standard-normal prior."""

    stochastic = True
    standard_prior = True  # p(z) = N(0, I), so KL(q || p) has a closed form; False for the VampPrior

    def __init__(self, cfg: ModelConfig, enc_out: int) -> None:
        super().__init__()
        if cfg.likelihood not in LIKELIHOODS:
            raise VaezooError(f"unknown likelihood '{cfg.likelihood}'; choose from {', '.join(LIKELIHOODS)}")
        self.cfg = cfg
        self.latent_dim = cfg.latent_dim
        self.encoder, self.decoder = build_backbone(cfg, enc_out)
        extra = {"sigma": cfg.sigma, "learn_sigma": cfg.learn_sigma, "sigma_floor": cfg.sigma_floor} if cfg.likelihood == "gaussian" else {}
        self.likelihood = LIKELIHOODS[cfg.likelihood](tuple(cfg.input_shape), **extra)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters (logits or means) for z [..., d] -> [..., *input_shape]."""
        lead = z.shape[:-1]
        out = self.decoder(z.reshape(-1, z.shape[-1]))
        return out.reshape(*lead, *out.shape[1:])

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z), summed over pixels; z may have leading sample dims [K, B, d]."""
        return self.likelihood.log_prob(x, self.decode(z))

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        return standard_normal_log_prob(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean images of p(x|z) for z ~ N(0, I), drawn on the generator's device (a CPU generator serves a model
        on any device)."""
        dev = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=generator.device if generator else dev)
        return self.likelihood.mean(self.decode(z.to(dev)))

    @torch.no_grad()
    def init_output_bias(self, pixel_mean: torch.Tensor) -> None:
        """Burda et al. 2016: start the decoder's output bias at the logit of the training pixel mean."""
        last = output_layer(self.decoder)
        p = pixel_mean.clamp(1e-3, 1 - 1e-3)
        value = torch.logit(p) if self.cfg.likelihood == "bernoulli" else pixel_mean
        if last.bias.numel() == value.numel():
            last.bias.copy_(value.reshape(last.bias.shape))
        else:  # a conv decoder has one bias per channel
            last.bias.fill_(float(value.mean()))


@register_model("miwae", "MIWAE (Rainforth et al. 2018): the VAE's networks trained on the mean of M=8 IWAE bounds of K=8 samples", bound="miwae", k=8, m=8)
@register_model("iwae", "IWAE (Burda et al. 2016): the VAE's networks trained on the K-sample importance-weighted bound", bound="iwae", k=5)
@register_model("beta-vae", "beta-VAE (Higgins et al. 2017): the ELBO with beta on the KL term", beta=4.0)
@register_model("vae", "VAE (Kingma & Welling 2014): Gaussian q(z|x), N(0, I) prior, trained on the ELBO")
class VAE(LatentModel):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg, enc_out=2 * cfg.latent_dim)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        mu, raw = self.encoder(x).chunk(2, dim=-1)
        return DiagonalGaussian(mu, F.softplus(raw) + MIN_SCALE)
