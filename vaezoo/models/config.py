"""The model's typed config, shared by every variant (the variant is ``name``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vaezoo.core.errors import VaezooError

# The names of vaezoo.models.backbones.BACKBONES, listed here because backbones.py imports this module (a
# circular import otherwise); tests/test_models.py checks the two agree.
BACKBONE_NAMES: tuple[str, ...] = ("mlp", "conv", "linear")

# The floor under a learned Gaussian sigma: one grey level of an 8-bit image in [0, 1]. Finer than that the data carry
# no information; without a floor, a pixel that never varies (mnist5k has 128) drives its sigma to 0 and the bound
# to +infinity (a 600-step run's test ELBO climbed from -602 to -313 and was still climbing).
SIGMA_FLOOR = 1 / 255

# Burda et al. 2016, Table 1, one stochastic layer: 784-200-200-50, tanh, output bias = logit(pixel mean).
PRESETS: dict[str, dict] = {
    "burda": {"backbone": "mlp", "hidden": (200, 200), "latent_dim": 50, "activation": "tanh", "output_bias": "data-mean"},
}


@dataclass
class ModelConfig:
    """Networks and likelihood. ``input_shape`` is filled from the dataset when a run is resolved."""

    name: str = "vae"
    backbone: str = "mlp"
    preset: str | None = None
    hidden: tuple[int, ...] = (512, 256)
    channels: tuple[int, ...] = (32, 64)
    activation: str = "relu"
    latent_dim: int = 32
    likelihood: str = "bernoulli"
    sigma: float = 1.0
    learn_sigma: str = "fixed"
    sigma_floor: float = SIGMA_FLOOR
    output_bias: str = "zero"
    pseudo_inputs: int = 100  # the VampPrior's C (variant vamp); every other variant ignores it
    input_shape: tuple[int, ...] = field(default=(1, 28, 28))

    def __post_init__(self) -> None:
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise VaezooError(f"unknown preset '{self.preset}'; choose from {', '.join(PRESETS)}")
            for key, value in PRESETS[self.preset].items():
                setattr(self, key, value)
        if self.backbone not in BACKBONE_NAMES:
            raise VaezooError(f"unknown backbone '{self.backbone}'; choose from {', '.join(BACKBONE_NAMES)}")
        if self.latent_dim <= 0:
            raise VaezooError(f"latent_dim must be > 0, got {self.latent_dim}")
        if any(h <= 0 for h in self.hidden) or any(c <= 0 for c in self.channels):
            raise VaezooError(f"layer sizes must be > 0, got hidden={self.hidden} channels={self.channels}")
        if not self.input_shape or any(s <= 0 for s in self.input_shape):
            raise VaezooError(f"input_shape must be positive sizes, got {self.input_shape}")
        if self.pseudo_inputs < 1:
            raise VaezooError(f"pseudo_inputs (the VampPrior's mixture components) must be >= 1, got {self.pseudo_inputs}")
        if self.output_bias not in ("zero", "data-mean"):
            raise VaezooError(f"output_bias must be 'zero' or 'data-mean', got '{self.output_bias}'")
