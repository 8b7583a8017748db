"""Checks every export passes before a byte is written: ``onnx.checker`` (full check), then onnxruntime
against torch on random z at batch 1, 64 and 1024."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from vaezoo.core.errors import VaezooError

PARITY_BATCHES = (1, 64, 1024)
# max |onnxruntime - torch| per pixel, by precision. int8 and fp16 are lossy by design: their bounds sit
# well above what the shipped decoders show (int8 dynamic QUInt8: max 0.08, mean 0.002 on mlp-vae.mnist5k;
# fp16: max 0.001; see exporters/precision.py) and catch broken graphs, not rounding.
TOLERANCE = {"fp32": 1e-5, "fp16": 5e-3, "int8": 0.25}
MEAN_TOLERANCE = {"fp32": 1e-6, "fp16": 5e-4, "int8": 0.01}  # mean |onnxruntime - torch| per pixel


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
           batches: tuple[int, ...] = PARITY_BATCHES, seed: int = 0, mean_tolerance: float | None = None) -> dict:
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
                f"> tolerance {bound:g}; nothing was written"
            )
    return {"max_abs_diff": diffs, "mean_abs_diff": means, "tolerance": tolerance, "mean_tolerance": mean_tolerance,
            "batches": list(batches)}
