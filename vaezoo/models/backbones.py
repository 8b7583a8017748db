"""Encoder/decoder networks: ``mlp``, ``conv`` (28x28-style images) and ``linear`` (for the
linear-Gaussian model, whose true posterior a linear encoder can represent exactly).

A backbone returns (encoder, decoder): the encoder maps x [B, *shape] to ``enc_out`` features,
the decoder maps z [N, d] to the likelihood's parameters [N, *shape].
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from vaezoo.core.errors import VaezooError
from vaezoo.models.config import ModelConfig

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
}


def _activation(name: str) -> Callable[[], nn.Module]:
    if name not in ACTIVATIONS:
        raise VaezooError(f"unknown activation '{name}'; choose from {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _mlp(sizes: list[int], act: Callable[[], nn.Module]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return layers


def mlp(cfg: ModelConfig, enc_out: int) -> tuple[nn.Module, nn.Module]:
    act = _activation(cfg.activation)
    D = math.prod(cfg.input_shape)
    enc = nn.Sequential(nn.Flatten(), *_mlp([D, *cfg.hidden, enc_out], act))
    dec = nn.Sequential(*_mlp([cfg.latent_dim, *reversed(cfg.hidden), D], act), nn.Unflatten(1, cfg.input_shape))
    return enc, dec


def linear(cfg: ModelConfig, enc_out: int) -> tuple[nn.Module, nn.Module]:
    D = math.prod(cfg.input_shape)
    enc = nn.Sequential(nn.Flatten(), nn.Linear(D, enc_out))
    dec = nn.Sequential(nn.Linear(cfg.latent_dim, D), nn.Unflatten(1, cfg.input_shape))
    return enc, dec


def conv(cfg: ModelConfig, enc_out: int) -> tuple[nn.Module, nn.Module]:
    """Two stride-2 convolutions down, a linear layer, and the mirror image up (4x4 kernels)."""
    if len(cfg.input_shape) != 3:
        raise VaezooError(f"conv backbone needs images [C, H, W], got input_shape {cfg.input_shape}")
    C, H, W = cfg.input_shape
    n = len(cfg.channels)
    if H % 2**n or W % 2**n:
        raise VaezooError(f"conv backbone needs H and W divisible by {2**n}, got {H}x{W}")
    act = _activation(cfg.activation)
    chans = [C, *cfg.channels]
    down: list[nn.Module] = []
    for a, b in zip(chans[:-1], chans[1:]):
        down += [nn.Conv2d(a, b, 4, stride=2, padding=1), act()]
    h, w = H // 2**n, W // 2**n
    flat = chans[-1] * h * w
    enc = nn.Sequential(*down, nn.Flatten(), nn.Linear(flat, enc_out))
    up: list[nn.Module] = [nn.Linear(cfg.latent_dim, flat), act(), nn.Unflatten(1, (chans[-1], h, w))]
    rev = list(reversed(chans))
    for i, (a, b) in enumerate(zip(rev[:-1], rev[1:])):
        up.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
        if i < len(rev) - 2:
            up.append(act())
    return enc, nn.Sequential(*up)


BACKBONES: dict[str, Callable[[ModelConfig, int], tuple[nn.Module, nn.Module]]] = {
    "mlp": mlp,
    "conv": conv,
    "linear": linear,
}


def build_backbone(cfg: ModelConfig, enc_out: int) -> tuple[nn.Module, nn.Module]:
    return BACKBONES[cfg.backbone](cfg, enc_out)  # ModelConfig has refused any other name


def output_layer(decoder: nn.Module) -> nn.Module:
    """The decoder's last layer with a bias (where the pixel-mean initialisation goes)."""
    last = [m for m in decoder.modules() if isinstance(m, (nn.Linear, nn.ConvTranspose2d))][-1]
    return last
