"""Checks every export passes before a byte is written: ``onnx.checker`` (full check), then onnxruntime
against torch on random z at batch 1, 64 and 1024."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from vaezoo.core.errors import VaezooError

PARITY_BATCHES = (1, 64, 1024)
# max |onnxruntime - torch| per pixel, by precision. fp16 is lossy by design: its bound sits well above what the
# shipped decoders show (max 0.001; see exporters/precision.py) and catches broken graphs, not rounding.
TOLERANCE = {"fp32": 1e-5, "fp16": 5e-3}
MEAN_TOLERANCE = {"fp32": 1e-6, "fp16": 5e-4}  # mean |onnxruntime - torch| per pixel
# int8 is gated per method, (weight type, reduce_range, per_channel) -> (max, mean) |int8 - torch fp32| per pixel:
# 1.5 x the worst figure any CPU family has shown on the four shipped decoders (AMD EPYC with VNNI, Intel Xeon with
# VNNI, and qint8 per-channel 0.14 on an AMD CPU reported in issue 15; benchmarks/results/int8-error-*.md), rounded
# up. An int8 graph worse than its method achieves is a broken graph (or saturating u8s8 kernels), not rounding.
INT8_MARGIN = 1.5
INT8_TOLERANCE = {
    ("quint8", False, False): (0.15, 0.004),  # worst max 0.10 (issue 15: 0.09-0.10), mean 0.0024
    ("quint8", True, False): (0.24, 0.006),   # 0.160, 0.0039
    ("quint8", False, True): (0.12, 0.003),   # 0.078, 0.0017
    ("qint8", False, False): (0.16, 0.005),   # 0.103, 0.0031
    ("qint8", True, False): (0.28, 0.008),    # 0.186, 0.0054
    ("qint8", False, True): (0.21, 0.003),    # 0.14 (AMD, issue 15), 0.0018
}


def gate(precision: str, weight_type: str = "quint8", reduce_range: bool = False, per_channel: bool = False) -> tuple[float, float, str]:
    """(max, mean) tolerance per pixel of an export, and what it is (for the error message)."""
    if precision != "int8":
        return TOLERANCE[precision], MEAN_TOLERANCE[precision], ""
    method = f"int8 {weight_type}{', reduce_range' if reduce_range else ''}{', per-channel' if per_channel else ''}"
    mx, mean = INT8_TOLERANCE[(weight_type, bool(reduce_range), bool(per_channel))]
    return mx, mean, f"{method}: {INT8_MARGIN:g} x what the method achieves on the shipped decoders"


def check_graph(blob: bytes) -> None:
    """``onnx.checker`` with full shape inference; a failure is a VaezooError."""
    try:
        onnx.checker.check_model(onnx.load_from_string(blob), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise VaezooError(f"ONNX checker rejected the graph: {str(exc).splitlines()[0]}") from None


def _session(blob: bytes):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's pybind exception types
        raise VaezooError(f"onnxruntime cannot load the exported graph: {str(exc).splitlines()[0]}") from None


@torch.no_grad()
def parity(blob: bytes, head: torch.nn.Module, latent_dim: int, tolerance: float, sampler: bool = False,
           batches: tuple[int, ...] = PARITY_BATCHES, seed: int = 0, mean_tolerance: float | None = None,
           gate_note: str = "") -> dict:
    """max and mean |onnxruntime - torch| at each batch size; raises (naming the worst batch) when a max exceeds
    ``tolerance`` or a mean exceeds ``mean_tolerance``.

    A sampler graph also returns its z, so torch decodes the very z the graph drew.
    """
    sess = _session(blob)
    g = torch.Generator().manual_seed(seed)
    diffs: dict[str, float] = {}
    means: dict[str, float] = {}
    for b in batches:
        if sampler:
            x, z = sess.run(["x", "z"], {"n": np.array(b, dtype=np.int64)})
            if z.shape != (b, latent_dim):
                raise VaezooError(f"sampler graph drew z of shape {z.shape} for n={b}")
            z = torch.from_numpy(z)
        else:
            z = torch.randn(b, latent_dim, generator=g)
            (x,) = sess.run(["x"], {"z": z.numpy()})
        ref = head(z).numpy()
        if x.shape != ref.shape:
            raise VaezooError(f"onnxruntime output shape {x.shape} != torch {ref.shape} at batch {b}")
        err = np.abs(x.astype(np.float64) - ref) if np.isfinite(x).all() else np.array([np.inf])
        diffs[str(b)], means[str(b)] = float(err.max()), float(err.mean())
    for what, values, bound in (("max", diffs, tolerance), ("mean", means, mean_tolerance)):
        worst = max(values, key=values.get)
        if bound is not None and not values[worst] <= bound:
            raise VaezooError(
                f"verification failed: {what} |onnxruntime - torch| = {values[worst]:.3g} at batch {worst} "
                f"> tolerance {bound:g}{f' ({gate_note})' if gate_note else ''}; nothing was written"
            )
    return {"max_abs_diff": diffs, "mean_abs_diff": means, "tolerance": tolerance, "mean_tolerance": mean_tolerance,
            "batches": list(batches)}
