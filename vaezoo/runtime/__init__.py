"""Sampling runtime for services: numpy and onnxruntime only (never torch, never mlflow).

Install only what it needs: ``pip install numpy onnxruntime`` and ``pip install --no-deps`` vaezoo's wheel (built
from a checkout until it is published: README, "For service authors"); ``onnxruntime-gpu`` for CUDA. Then::

    from vaezoo.runtime import Decoder
    images = Decoder("mlp-vae.mnist5k").sample(64, seed=0)   # [64, 1, 28, 28] float32 in [0, 1]
"""

from vaezoo.runtime.cache import cache_dir, sha256_file
from vaezoo.runtime.catalog import check_name, list_pretrained, load_manifest, pretrained_entry
from vaezoo.runtime.decoder import MAX_BATCH, Decoder, default_providers, parse_metadata, sample_mixture
from vaezoo.runtime.pull import parse_url, pull

__all__ = [
    "Decoder",
    "MAX_BATCH",
    "cache_dir",
    "check_name",
    "default_providers",
    "list_pretrained",
    "load_manifest",
    "parse_metadata",
    "parse_url",
    "pretrained_entry",
    "pull",
    "sample_mixture",
    "sha256_file",
]
