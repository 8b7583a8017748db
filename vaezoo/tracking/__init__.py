"""Tracking: MLflow runs (``runs``), a run folder's metrics journal and its MLflow replica (``journal``,
``sync``: nothing lost to a kill or a server that goes away), opening a store (``store``), a run's owning
process (``liveness``), the model registry and ``vaezoo pull`` (``registry``), and the provenance every run
records (``provenance``: git, versions, device, CPU, determinism).

``folder`` holds a training run's tracker. mlflow is imported lazily, inside functions, so ``--no-track``
works without it installed."""

from vaezoo.tracking.folder import DeferredTracker, FolderTracker, check_owner, refuse_unreachable, start_training
from vaezoo.tracking.runs import (
    EXPERIMENT,
    MlflowTracker,
    NullTracker,
    default_store,
    flatten,
    require_mlflow,
    start,
    tracking_uri,
    training_params,
)

__all__ = ["EXPERIMENT", "DeferredTracker", "FolderTracker", "MlflowTracker", "NullTracker", "check_owner", "default_store",
           "flatten", "refuse_unreachable", "require_mlflow", "start", "start_training", "tracking_uri", "training_params"]
