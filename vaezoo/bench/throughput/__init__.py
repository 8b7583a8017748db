"""``vaezoo bench throughput``: training samples/s of vaezoo's own step beside a plain PyTorch loop.

For each variant, backbone, batch size, device, precision and mode, two contenders train the same
model from the same weights on the same batch, interleaved window by window (vaezoo.bench.timing):

- ``vaezoo``: the library path of vaezoo.training.loop: ``build()`` makes model, Objective and Adam; a step
  is ``objective(model, x, generator)``, ``zero_grad``, ``loss.backward()``, ``optimizer.step()``.
- ``plain``: the loop a user would write: the hand-written loss of vaezoo.bench.plain_loop and
  ``torch.optim.Adam`` with torch's defaults (multi-tensor, not fused).

Both run the same step wrapper (autocast, grad scaler, compile or CUDA graph), so the ratio vaezoo / plain
is vaezoo's default training step against that loop: its objectives' cost and its fused Adam
(``optim.fused``, on by default). With ``optim.fused=false`` the two do the same work bit for bit (tested),
and the ratio is the objectives' cost alone. Not measured in either: data loading and the per-step
logging of the training loop. Every ratio (to the plain loop, compiled vs eager) comes from windows
interleaved in one process run; absolute samples/s depend on the machine and its load.

Modes: ``eager``; ``compile`` (``torch.compile`` of the whole step, optimizer included, noise from the
global generator since a torch.Generator argument breaks the graph); ``cudagraph`` (CUDA only: forward,
backward and Adam with ``capturable=True`` captured in one CUDA graph and replayed).
Precisions: ``fp32``; ``bf16`` autocast (CPU and CUDA); ``fp16`` autocast with a GradScaler (CUDA only).

FLOPs per step are counted from the layers (vaezoo.bench.flops); MFU is the achieved FLOP/s over the
device's matmul peak for that precision, measured in the same run (vaezoo.bench.timing.matmul_peak).

Modules: ``precision`` (precisions and their peaks), ``step`` (one step per mode; the two contenders),
``measure`` (the grid, interleaved windows, rows), ``results`` (CSV, PNG, MLflow), ``command`` (the CLI).
"""

from vaezoo.bench.throughput.measure import (
    ISOLATED_MODES,
    Environment,
    Row,
    ThroughputConfig,
    environment,
    run_throughput,
)
from vaezoo.bench.throughput.precision import PRECISIONS, Precision, get_precision
from vaezoo.bench.throughput.results import HEADER, format_row, read_rows, write_rows
from vaezoo.bench.throughput.step import (
    INPUT_SHAPE,
    MODES,
    TrainParts,
    compiled_step,
    eager_step,
    plain_parts,
    synthetic_batch,
    train_config,
    train_step,
    vaezoo_parts,
)

__all__ = [
    "HEADER",
    "INPUT_SHAPE",
    "ISOLATED_MODES",
    "MODES",
    "PRECISIONS",
    "Environment",
    "Precision",
    "Row",
    "ThroughputConfig",
    "TrainParts",
    "compiled_step",
    "eager_step",
    "environment",
    "format_row",
    "get_precision",
    "plain_parts",
    "read_rows",
    "run_throughput",
    "synthetic_batch",
    "train_config",
    "train_step",
    "vaezoo_parts",
    "write_rows",
]
