"""Precisions of the throughput benchmark: fp32, bf16 autocast (CPU and CUDA), fp16 autocast with a
GradScaler (CUDA only), each with the matmul peak its MFU is measured against."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vaezoo.core.errors import VaezooError


def _cpu_bf16() -> str | None:
    # Without oneDNN bf16 kernels autocast falls back to slow reference code: refuse rather than mislead.
    return (
        None
        if torch.ops.mkldnn._is_mkldnn_bf16_supported()
        else "oneDNN has no bf16 kernels for this CPU (it needs AVX-512)"
    )


def _cuda_bf16() -> str | None:
    return None if torch.cuda.is_bf16_supported() else "this GPU has no bf16 support"


@dataclass(frozen=True)
class Precision:
    """A training precision: the autocast dtype (None: plain fp32), whether a GradScaler is needed, and
    per device type a check that returns why it cannot run there (None: it can)."""

    name: str
    autocast: torch.dtype | None
    grad_scaler: bool
    support: dict[str, Callable[[], str | None]]

    @property
    def matmul_dtype(self) -> torch.dtype:
        return self.autocast or torch.float32

    def check(self, device: torch.device) -> None:
        if device.type not in self.support:
            raise VaezooError(
                f"precision '{self.name}' runs on {' and '.join(self.support)} only, not on {device.type}"
            )
        reason = self.support[device.type]()
        if reason:
            raise VaezooError(f"precision '{self.name}' is not supported on {device.type}: {reason}")

    def context(self, device: torch.device, cache_enabled: bool = True):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast, cache_enabled=cache_enabled)

    def scaler(self, device: torch.device):
        return torch.amp.GradScaler(device.type) if self.grad_scaler else None


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", None, False, {"cpu": lambda: None, "cuda": lambda: None}),
        Precision("bf16", torch.bfloat16, False, {"cpu": _cpu_bf16, "cuda": _cuda_bf16}),
        Precision("fp16", torch.float16, True, {"cuda": lambda: None}),
    )
}


def get_precision(name: str) -> Precision:
    if name not in PRECISIONS:
        raise VaezooError(f"unknown precision '{name}'; choose from {', '.join(PRECISIONS)}")
    return PRECISIONS[name]
