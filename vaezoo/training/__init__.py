"""Training and evaluation: the run config (``config``), the loop (``loop``), the run directory and its
checkpoint (``rundir``), evaluation (``evaluate``) and sample grids (``samples``)."""

from vaezoo.training.config import REFERENCE, OptimConfig, TrainConfig, resolve_config, resolve_for_dataset
from vaezoo.training.evaluate import evaluate, evaluate_run
from vaezoo.training.loop import build, train
from vaezoo.training.rundir import RunDir, load_run, load_run_model

__all__ = [
    "REFERENCE",
    "OptimConfig",
    "RunDir",
    "TrainConfig",
    "build",
    "evaluate",
    "evaluate_run",
    "load_run",
    "load_run_model",
    "resolve_config",
    "resolve_for_dataset",
    "train",
]
