"""The deterministic autoencoder: z = f(x), trained on reconstruction alone.

Its decoder still decodes z ~ N(0, I), so the tutorial's "AE prior samples are garbage" can be measured.
"""

from __future__ import annotations

import torch

from vaezoo.models.config import ModelConfig
from vaezoo.models.distributions import PointMass
from vaezoo.models.registry import register_model
from vaezoo.models.vae import LatentModel


@register_model("ae", "Deterministic autoencoder: reconstruction log-likelihood only, no KL", bound="recon")
class AE(LatentModel):
    stochastic = False

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg, enc_out=cfg.latent_dim)

    def encode(self, x: torch.Tensor) -> PointMass:
        return PointMass(self.encoder(x))
