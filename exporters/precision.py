"""Lower-precision variants of an exported fp32 decoder graph.

int8: onnxruntime dynamic quantisation (weights int8 offline, activations quantised per call, per tensor;
Gemm is rewritten as MatMulInteger, convolutions become ConvInteger, transposed convolutions stay fp32).
The weight type matters on CPUs without VNNI: there the u8s8 kernels (QInt8 weights) can saturate their
16-bit intermediate sums; QUInt8 weights (u8u8 kernels) or ``reduce_range`` (7-bit weights) avoid it.

Measured on the shipped mlp-vae.mnist5k (1,024 z, |int8 - torch fp32| per pixel, on an Intel Xeon with VNNI, where
QInt8 does not saturate; ``vaezoo pretrained check`` reruns it):
  QUInt8 max 0.081 mean 0.0020 | QInt8 max 0.102 mean 0.0023 | reduce_range: QUInt8 0.130, QInt8 0.163
  (7 bits cost precision and buy nothing with VNNI) | per-channel QUInt8 max 0.065 mean 0.0016.
All four shipped decoders on an AMD EPYC, and the export gate per method set from them, are in
benchmarks/results/int8-error-ort1.32.0-amd-epyc.md.
The error is spread over all three layers (leaving any one in fp32 gives max 0.04-0.08) and comes mostly from
quantising activations per tensor; the mean error stays near 1/500 of the pixel range.
Default: QUInt8, per tensor, no reduce_range - the lowest error that is also safe on CPUs without VNNI.
``--per-channel`` lowers the error a little more.

fp16: onnxruntime's float16 converter with float32 inputs and outputs kept (meant for GPU providers;
max 0.001 per pixel on the shipped MLP decoders).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from vaezoo.core.errors import VaezooError

INT8_WEIGHT_TYPES = ("quint8", "qint8")


class _Quiet(logging.Filter):
    """quantize_dynamic logs a generic 'consider pre-processing' warning on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


def to_int8(proto: onnx.ModelProto, weight_type: str = "quint8", reduce_range: bool = False,
            per_channel: bool = False) -> onnx.ModelProto:
    """Dynamic int8 quantisation of ``proto`` (its metadata is carried over)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    types = {"quint8": QuantType.QUInt8, "qint8": QuantType.QInt8}
    if weight_type not in types:
        raise VaezooError(f"unknown int8 weight type '{weight_type}'; choose from {', '.join(types)}")
    quiet = _Quiet()
    logging.getLogger().addFilter(quiet)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "int8.onnx"
            quantize_dynamic(proto, out, weight_type=types[weight_type], reduce_range=reduce_range, per_channel=per_channel)
            q = onnx.load(out)
    finally:
        logging.getLogger().removeFilter(quiet)
    onnx.helper.set_model_props(q, {p.key: p.value for p in proto.metadata_props})
    return q


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and arithmetic; z and x stay float32 so callers do not change."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return _topological(convert_float_to_float16(proto, keep_io_types=True))


def _topological(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Reorder nodes so each comes after its producers (the fp16 converter appends its input Casts last,
    which onnxruntime accepts but the ONNX checker rightly rejects)."""
    g = proto.graph
    ready = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    pending, ordered = list(g.node), []
    while pending:
        runnable = [n for n in pending if all(i in ready for i in n.input)]
        if not runnable:
            raise VaezooError("the fp16 graph has a cycle or an input nobody produces")
        for n in runnable:
            ordered.append(n)
            ready.update(n.output)
        pending = [n for n in pending if n not in runnable]
    del g.node[:]
    g.node.extend(ordered)
    return proto


@torch.no_grad()
def int8_error_table(proto: onnx.ModelProto, head: torch.nn.Module, latent_dim: int, n: int = 1024, seed: int = 0) -> list[dict]:
    """max and mean |int8 - torch fp32| per pixel for each weight type, with and without reduce_range, and
    per-channel weights."""
    import onnxruntime as ort

    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    ref = head(z).numpy().astype(np.float64)
    rows = []
    for weight_type in INT8_WEIGHT_TYPES:
        for reduce_range, per_channel in ((False, False), (True, False), (False, True)):
            q = to_int8(proto, weight_type, reduce_range, per_channel)
            sess = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
            err = np.abs(sess.run(["x"], {"z": z.numpy()})[0] - ref)
            rows.append({"weight_type": weight_type, "reduce_range": reduce_range, "per_channel": per_channel,
                         "max_abs_error": float(err.max()), "mean_abs_error": float(err.mean())})
    return rows
