"""Tracking: MLflow runs (``runs``), the model registry and ``vaezoo pull`` (``registry``), and the
provenance every run records (``provenance``: git, versions, device, CPU, determinism).

Only ``runs`` and ``registry`` import mlflow, lazily, so ``--no-track`` works without it installed."""

from vaezoo.tracking.runs import EXPERIMENT, MlflowTracker, NullTracker, default_store, flatten, start, tracking_uri

__all__ = ["EXPERIMENT", "MlflowTracker", "NullTracker", "default_store", "flatten", "start", "tracking_uri"]
