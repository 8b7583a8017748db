"""MLflow runs: a tracker that logs params, metrics, tags and artifacts, or does nothing when tracking is off.

mlflow is imported lazily (inside the functions of ``vaezoo.tracking`` that need it), so ``--no-track`` works
without it installed. A training run's tracker is a ``vaezoo.tracking.folder.FolderTracker``.

Default store: one folder, ``./mlruns`` (or $VAEZOO_MLRUNS): the SQLite file ``mlruns/mlflow.db`` holds
runs, params, metrics and tags; ``mlruns/artifacts/`` holds artifacts. ``MLFLOW_TRACKING_URI`` or
``--tracking-uri`` point elsewhere.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from vaezoo.core.errors import VaezooError
from vaezoo.core.io import make_dir

EXPERIMENT = "vaezoo"


def default_store() -> Path:
    return Path(os.environ.get("VAEZOO_MLRUNS", "mlruns")).resolve()


def tracking_uri(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    store = default_store()
    make_dir(store, "MLflow store")
    return f"sqlite:///{store / 'mlflow.db'}"


class NullTracker:
    """Tracking off: every call does nothing."""

    run_id: str | None = None
    uri: str | None = None

    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict, step: int) -> None: ...
    def set_tags(self, tags: dict) -> None: ...
    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None: ...
    def flush(self) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...


MISSING_MLFLOW = ("tracking is on but mlflow is not installed: `pip install mlflow` (or `pip install vaezoo[track]`), "
                  "or pass --no-track")


def require_mlflow() -> None:
    """Refuse tracking without mlflow installed, without importing it (that takes seconds)."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise VaezooError(MISSING_MLFLOW)


class MlflowTracker:
    """One MLflow run. Metrics are buffered and sent with ``log_batch`` (one round-trip per flush)."""

    def __init__(self, uri: str, run_name: str, run_id: str | None = None, experiment: str = EXPERIMENT,
                 create: bool = True) -> None:
        try:
            import mlflow  # noqa: F401
        except ImportError as exc:
            raise VaezooError(MISSING_MLFLOW) from exc
        from vaezoo.tracking.store import open_store

        self.uri = uri
        self.client, self.exp_id = open_store(uri, experiment)
        self._buffer: list = []
        if not create:
            return
        if run_id is None:
            run_id = self.client.create_run(self.exp_id, run_name=run_name).info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id

    def log_params(self, params: dict) -> None:
        log_params(self.client, self.run_id, params)

    def set_tags(self, tags: dict) -> None:
        set_tags(self.client, self.run_id, tags)

    def log_metrics(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if len(self._buffer) >= 500:
            self.flush()

    def flush(self) -> None:
        for i in range(0, len(self._buffer), 1000):
            self.client.log_batch(self.run_id, metrics=self._buffer[i : i + 1000])
        self._buffer = []

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), subdir)

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)


def log_params(client, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow's limit of params per log_batch
        client.log_batch(run_id, params=items[i : i + 100])


def set_tags(client, run_id: str, tags: dict) -> None:
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def training_params(cfg: dict, cfg_hash: str) -> dict:
    """A training run's MLflow params: its resolved config, flattened, and the config's hash."""
    return {**flatten(cfg), "config_hash": cfg_hash}


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def start(enabled: bool, run_name: str, uri: str | None = None, run_id: str | None = None):
    """A tracker: MLflow when enabled, else one that does nothing."""
    if not enabled:
        return NullTracker()
    return MlflowTracker(tracking_uri(uri), run_name, run_id=run_id)

