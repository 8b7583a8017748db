"""torch -> ONNX exporters for vaezoo decoders, each export verified before it is written.

Imports vaezoo's models; vaezoo's library never imports this package (only its CLI does).
"""

from exporters.export import ExportOptions, export_model, export_run, model_metadata, read_metadata, run_metadata
from exporters.graph import DecoderHead, load_torch_decoder, onnx_parameter_count, to_onnx
from exporters.precision import int8_error_table, to_fp16, to_int8
from exporters.sampler import wrap_sampler
from exporters.verify import INT8_TOLERANCE, PARITY_BATCHES, TOLERANCE, check_graph, gate, parity

__all__ = [
    "DecoderHead",
    "ExportOptions",
    "INT8_TOLERANCE",
    "PARITY_BATCHES",
    "TOLERANCE",
    "check_graph",
    "export_model",
    "export_run",
    "gate",
    "int8_error_table",
    "load_torch_decoder",
    "model_metadata",
    "onnx_parameter_count",
    "parity",
    "read_metadata",
    "run_metadata",
    "to_fp16",
    "to_int8",
    "to_onnx",
    "wrap_sampler",
]
