"""torch -> ONNX for a vaezoo decoder: the graph ``z`` [N, latent_dim] -> ``x`` [N, *shape], one file.

The exported module is the decoder followed by the likelihood's mean (sigmoid for Bernoulli logits, so
the graph emits probabilities; identity for Gaussian means). The batch axis is dynamic.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings

import numpy as np
import onnx
import torch
from google.protobuf.message import Message
from onnx import numpy_helper
from torch import nn

from exporters import OPSET
from vaezoo.core.errors import VaezooError
from vaezoo.runtime.decoder import METADATA_PREFIX, parse_metadata

INPUT, OUTPUT = "z", "x"
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)

# What the graph's output means, per likelihood (the likelihood's ``mean`` is applied inside the graph).
OUTPUT_MEANING = {"bernoulli": "probabilities", "gaussian": "mean"}


class DecoderHead(nn.Module):
    """z -> mean of p(x|z): the part of a model a sampling service needs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.decoder = model.decoder
        self.mean = model.likelihood.mean  # a bound method: no likelihood parameters enter the graph

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mean(self.decoder(z))


def decoder_parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.decoder.parameters())


def onnx_parameter_count(proto: onnx.ModelProto) -> int:
    """Elements in the floating-point initializers: the weights (shape constants are integers)."""
    return sum(int(np.prod(t.dims)) for t in proto.graph.initializer if t.data_type in FLOAT_TYPES)


def to_onnx(model: nn.Module, opset: int = OPSET) -> onnx.ModelProto:
    """The fp32 decoder graph of ``model``; a decoder torch.export cannot capture is a clear error."""
    if opset < 18:
        raise VaezooError(f"opset must be >= 18, got {opset}")
    if not hasattr(model, "decoder") or not hasattr(model, "likelihood"):
        raise VaezooError(f"{type(model).__name__} has no decoder/likelihood to export")
    name = getattr(model.cfg, "likelihood", "?")
    if name not in OUTPUT_MEANING:
        raise VaezooError(f"cannot export a decoder with likelihood '{name}'; exportable: {', '.join(OUTPUT_MEANING)}")
    head = DecoderHead(model).eval().cpu()
    z = torch.randn(2, model.latent_dim)
    batch = torch.export.Dim("batch", min=1)
    try:
        # the exporter prints progress, logs and warns about things that do not concern a decoder: keep
        # them out of the user's terminal; a failure is reported below with its root cause
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings(), _logging_off():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                head, (z,), input_names=[INPUT], output_names=[OUTPUT], opset_version=opset,
                dynamic_shapes={"z": {0: batch}}, external_data=False, dynamo=True, verbose=False,
            )
    except Exception as exc:  # torch.export raises many types (Unsupported, UserError, ConversionError, ...)
        raise VaezooError(
            f"the decoder of model '{model.cfg.name}' ({model.cfg.backbone}) cannot be exported to ONNX: {_root_cause(exc)}"
        ) from None
    proto = program.model_proto
    made = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None)
    if made != opset:  # past what its version converter knows, the exporter quietly keeps its own opset
        raise VaezooError(f"opset {opset} is not available: the exporter made opset {made}; choose one it supports")
    strip_trace_metadata(proto)
    if onnx_parameter_count(proto) != decoder_parameter_count(model):
        raise VaezooError(
            f"the decoder of model '{model.cfg.name}' cannot be exported faithfully: the graph holds "
            f"{onnx_parameter_count(proto)} weights, the decoder {decoder_parameter_count(model)} "
            "(tracing baked in values the decoder computes)"
        )
    return proto


def strip_trace_metadata(proto: onnx.ModelProto) -> None:
    """Drop the exporter's notes everywhere below the model (Python stack traces with the build machine's
    file paths, FX node text, module scopes): in the graph and in every local function, on values, nodes,
    initializers and nested subgraphs. A shipped file then depends only on the weights and the graph, and
    rebuilds byte for byte from any checkout. ``proto.metadata_props`` itself is left alone (the
    ``vaezoo.*`` metadata is written there later, by ``set_metadata``)."""
    for part in (proto.graph, *proto.functions):
        _clear_metadata_props(part)


def _clear_metadata_props(msg: Message) -> None:
    # A generic walk over the fields that are set, rather than a list of the places the exporter writes
    # notes today: a new place (a function's value_info, an attribute's subgraph, ...) is covered too.
    for field, value in msg.ListFields():
        if field.name == "metadata_props":
            msg.ClearField(field.name)
        elif field.type == field.TYPE_MESSAGE:
            # singular vs repeated told by the value: FieldDescriptor.label is gone in protobuf 7,
            # .is_repeated is missing from older releases
            for sub in ([value] if isinstance(value, Message) else value):
                _clear_metadata_props(sub)


@contextlib.contextmanager
def _logging_off():
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _root_cause(exc: BaseException) -> str:
    """First line of the innermost exception in the chain (torch.export wraps the reason several times)."""
    while exc.__cause__ is not None or (exc.__context__ is not None and not exc.__suppress_context__):
        exc = exc.__cause__ or exc.__context__
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in str(exc).splitlines()]
    return next((ln for ln in lines if ln), type(exc).__name__)


def set_metadata(proto: onnx.ModelProto, metadata: dict) -> None:
    """Write ``metadata`` as ``vaezoo.<key>`` props, each value JSON-encoded (the runtime decodes them)."""
    props = {p.key: p.value for p in proto.metadata_props if not p.key.startswith(METADATA_PREFIX)}
    props.update({METADATA_PREFIX + k: json.dumps(v, sort_keys=True) for k, v in metadata.items()})
    onnx.helper.set_model_props(proto, props)


def get_metadata(proto: onnx.ModelProto) -> dict:
    """The ``vaezoo.*`` metadata of ``proto``, decoded as the runtime decodes it."""
    return parse_metadata({p.key: p.value for p in proto.metadata_props})


def load_torch_decoder(proto: onnx.ModelProto) -> nn.Module:
    """Rebuild the torch decoder head of an exported fp32 graph (config from metadata, weights from the
    initializers); strict loading fails loudly if the graph does not hold exactly the decoder's weights."""
    from vaezoo.core.configs import from_dict
    from vaezoo.models import ModelConfig, build_model

    meta = get_metadata(proto)
    if "model_config" not in meta:
        raise VaezooError("this ONNX file carries no vaezoo model_config metadata")
    model = build_model(from_dict(ModelConfig, meta["model_config"]))
    head = DecoderHead(model)
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in proto.graph.initializer
               if t.data_type in FLOAT_TYPES}
    state = {k: v for k, v in weights.items() if k.startswith("decoder.")}
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise VaezooError(f"the graph's weights do not match its model_config: {str(exc).splitlines()[0]}") from None
    return head.eval()
