"""The decoders shipped with vaezoo (``*.onnx`` beside this file) and the typed record of each, as the
manifest (``manifest.json``) holds it: file, sha256, size, parameter count, metrics, the recipe that
``vaezoo reproduce pretrained NAME`` reruns, and how it was trained.

Pure Python (no torch, no numpy): the runtime reads these records too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vaezoo.core.configs import from_dict, to_dict
from vaezoo.core.errors import VaezooError


@dataclass(frozen=True)
class PretrainedMetrics:
    """Test-set figures in nats per image (IS: importance-sampled log-likelihood with ``ll_is_samples``)."""

    test_elbo: float
    test_iwae_k64: float
    test_ll_is: float
    test_ll_is_mc_se: float
    test_kl: float
    active_units: int
    ll_is_samples: int
    n_test: int


@dataclass(frozen=True)
class Tolerance:
    """How far a rerun of the recipe may land from the shipped metrics."""

    nats: float
    active_units: int


@dataclass(frozen=True)
class TrainingRecord:
    """Where and how the shipped weights were trained."""

    cpu: str
    seconds: float
    steps: int
    torch_threads: int
    weights_sha256: str


@dataclass(frozen=True)
class PretrainedEntry:
    """One shipped decoder. ``parity`` (onnxruntime vs torch at the export's batches) and ``recipe`` (the
    resolved training config with its hash, the evaluation protocol, versions) stay mappings: the exporter
    and ``reproduce`` check them against their own types."""

    name: str
    file: str
    sha256: str
    size_bytes: int
    parameter_count: int
    latent_dim: int
    output_shape: tuple[int, ...]
    likelihood: str
    output: str
    dataset: str
    description: str
    license: str
    data_license: str
    metrics: PretrainedMetrics
    tolerance: Tolerance
    training: TrainingRecord
    parity: dict
    recipe: dict
    url: str | None = None  # where a decoder that is listed but not installed can be downloaded

    @classmethod
    def from_dict(cls, data: Any) -> PretrainedEntry:
        """Strict: an unknown or missing key, or a value of the wrong type, is one clear error naming it."""
        if not isinstance(data, dict):
            raise VaezooError(f"a pretrained manifest entry must be a mapping, got {type(data).__name__}")
        where = f"manifest entry '{data.get('name', '?')}'"
        _require(cls, data, where)
        for key, sub in (("metrics", PretrainedMetrics), ("tolerance", Tolerance), ("training", TrainingRecord)):
            if isinstance(data.get(key), dict):
                _require(sub, data[key], f"{where}: {key}")
        try:
            return from_dict(cls, data)
        except VaezooError as exc:
            raise VaezooError(f"{where}: {exc}") from None

    def to_dict(self) -> dict:
        return to_dict(self)


def _require(cls: type, data: dict, where: str) -> None:
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise VaezooError(f"{where} lacks {', '.join(missing)}")


__all__ = ["PretrainedEntry", "PretrainedMetrics", "Tolerance", "TrainingRecord"]
