"""The training loss a user would write by hand in plain PyTorch, for the speed comparison.

Same networks (the model's own ``encoder`` and ``decoder`` modules), same parameterisation
(sigma = softplus(.) + 1e-4), same noise draw and the same arithmetic as vaezoo's objectives, but
none of vaezoo's machinery (no Objective, no distribution objects, no estimator dispatch). With the
same weights and seed its losses are bit-identical to vaezoo's (tests/test_throughput.py checks it),
so the two loops do the same work and their speed ratio is vaezoo's overhead alone.

Covers what the registered variants train with by default: the ELBO with closed-form or sampled KL
(``vae``, ``beta-vae``), the IWAE bound (``iwae``), MIWAE's (``miwae``), reconstruction (``ae``), the sampled-KL ELBO
under a VampPrior (``vamp``: log p(z) from the encoder at the model's pseudo-inputs); Bernoulli decoders, pathwise
(reparam) gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vaezoo.core.errors import VaezooError

LOG_2PI = math.log(2 * math.pi)

LossFn = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]
LogPrior = Callable[[torch.Tensor], torch.Tensor]  # z [K, B, d] -> log p(z) [K, B]


def _bernoulli_ll(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """sum over pixels of x * l - softplus(l): log p(x|z) for Bernoulli logits, [K, B]."""
    return (x * logits - F.softplus(logits)).flatten(2).sum(-1)


def _encode(enc: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu, raw = enc(x).chunk(2, dim=-1)
    return mu, F.softplus(raw) + 1e-4


def _decode(dec: nn.Module, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    k, b, d = z.shape
    return dec(z.reshape(k * b, d)).reshape(k, b, *x.shape[1:])


def _noise(mu: torch.Tensor, k: int, generator) -> torch.Tensor:
    return torch.randn((k, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)


def elbo_analytic(enc, dec, k: int, beta: float) -> LossFn:
    def loss(x, generator=None):
        mu, sigma = _encode(enc, x)
        z = mu + sigma * _noise(mu, k, generator)
        recon = _bernoulli_ll(x, _decode(dec, z, x)).mean(0)
        kl = 0.5 * (mu.pow(2) + sigma.pow(2) - 1 - 2 * torch.log(sigma)).sum(-1)
        return -(recon - beta * kl).mean()

    return loss


def standard_normal_prior(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def vamp_prior(enc: nn.Module, pseudo_inputs: torch.Tensor) -> LogPrior:
    """log (1/C) sum_c N(z; mu(u_c), sigma(u_c)^2): the VampPrior, the encoder run on the C pseudo-inputs."""

    def log_prior(z):
        mu_c, sigma_c = _encode(enc, pseudo_inputs)
        eps = (z.unsqueeze(-2) - mu_c) / sigma_c  # [K, B, C, d]
        log_comp = -0.5 * (eps.pow(2) + LOG_2PI + 2 * torch.log(sigma_c)).sum(-1)
        return torch.logsumexp(log_comp, dim=-1) - math.log(pseudo_inputs.shape[0])

    return log_prior


def _log_weights(enc, dec, x, k, generator, prior: LogPrior):
    mu, sigma = _encode(enc, x)
    z = mu + sigma * _noise(mu, k, generator)
    log_px = _bernoulli_ll(x, _decode(dec, z, x))
    log_pz = prior(z)
    log_qz = -0.5 * (((z - mu) / sigma).pow(2) + LOG_2PI + 2 * torch.log(sigma)).sum(-1)
    return log_px, log_pz, log_qz


def elbo_mc(enc, dec, k: int, beta: float, prior: LogPrior = standard_normal_prior) -> LossFn:
    def loss(x, generator=None):
        log_px, log_pz, log_qz = _log_weights(enc, dec, x, k, generator, prior)
        log_w = log_px + log_pz - log_qz if beta == 1.0 else log_px + beta * (log_pz - log_qz)
        return -log_w.mean(0).mean()

    return loss


def iwae(enc, dec, k: int, beta: float, prior: LogPrior = standard_normal_prior) -> LossFn:
    def loss(x, generator=None):
        log_px, log_pz, log_qz = _log_weights(enc, dec, x, k, generator, prior)
        log_w = log_px + log_pz - log_qz
        return -(torch.logsumexp(log_w, dim=0) - math.log(k)).mean()

    return loss


def miwae(enc, dec, k: int, beta: float, m: int, prior: LogPrior = standard_normal_prior) -> LossFn:
    """M outer groups of K draws: the mean over groups of logsumexp - log K."""

    def loss(x, generator=None):
        log_px, log_pz, log_qz = _log_weights(enc, dec, x, m * k, generator, prior)
        log_w = (log_px + log_pz - log_qz).reshape(m, k, -1)
        return -(torch.logsumexp(log_w, dim=1) - math.log(k)).mean(0).mean()

    return loss


def recon(enc, dec, k: int, beta: float) -> LossFn:
    def loss(x, generator=None):
        logits = dec(enc(x))
        return -(x * logits - F.softplus(logits)).flatten(1).sum(-1).mean()

    return loss


# (bound, kl) -> hand-written loss
PLAIN_LOSSES: dict[tuple[str, str], Callable[..., LossFn]] = {
    ("elbo", "analytic"): elbo_analytic,
    ("elbo", "mc"): elbo_mc,
    ("iwae", "mc"): iwae,
    ("miwae", "mc"): miwae,
    ("recon", "auto"): recon,
}


def plain_loss(model: nn.Module, objective_cfg) -> LossFn:
    """The hand-written loss for ``model`` trained on ``objective_cfg`` (a resolved ObjectiveConfig)."""
    c = objective_cfg
    key = (c.bound, c.kl)
    if model.cfg.likelihood != "bernoulli" or c.estimator != "reparam" or key not in PLAIN_LOSSES:
        raise VaezooError(
            f"no plain-loop baseline for a {model.cfg.likelihood} decoder with bound '{c.bound}', kl '{c.kl}', "
            f"estimator '{c.estimator}' (written for Bernoulli decoders with reparam gradients)"
        )
    outer = (c.m,) if c.bound == "miwae" else ()  # MIWAE's M; the other losses have none
    # the VampPrior's pseudo-inputs are the model's own parameter, so both loops train the same ones
    prior = {"prior": vamp_prior(model.encoder, model.pseudo_inputs)} if hasattr(model, "pseudo_inputs") else {}
    return PLAIN_LOSSES[key](model.encoder, model.decoder, c.k, c.beta, *outer, **prior)
