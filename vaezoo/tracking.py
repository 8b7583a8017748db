"""The only module that imports mlflow (lazily), so ``--no-track`` works without it installed.

Default store: one folder, ``./mlruns`` (or $VAEZOO_MLRUNS): the SQLite file ``mlruns/mlflow.db`` holds
runs, params, metrics and tags; ``mlruns/artifacts/`` holds artifacts. ``MLFLOW_TRACKING_URI`` or
``--tracking-uri`` point elsewhere.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from vaezoo.errors import VaezooError
from vaezoo.io import make_dir

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


class MlflowTracker:
    """One MLflow run. Metrics are buffered and sent with ``log_batch`` (one round-trip per flush)."""

    def __init__(self, uri: str, run_name: str, run_id: str | None = None, experiment: str = EXPERIMENT) -> None:
        try:
            from mlflow.tracking import MlflowClient

            import mlflow  # noqa: F401
        except ImportError as exc:
            raise VaezooError(
                "tracking is on but mlflow is not installed: `pip install mlflow` (or `pip install vaezoo[track]`), or pass --no-track"
            ) from exc
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            loc = None
            if uri.startswith("sqlite:///") and not os.environ.get("MLFLOW_TRACKING_URI"):
                loc = (Path(uri[len("sqlite:///") :]).parent / "artifacts").as_uri()
            exp_id = self.client.create_experiment(experiment, artifact_location=loc)
        else:
            exp_id = exp.experiment_id
        if run_id is None:
            run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        self._buffer: list = []

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

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


# --- model registry (used by `vaezoo export --register` and `vaezoo pull models:/NAME@ALIAS`) ---


def _registry_client(uri: str | None):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise VaezooError("the MLflow model registry needs mlflow: `pip install mlflow` (or vaezoo[track])") from exc
    uri = tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


SHA256_TAG = "vaezoo.sha256"  # model-version tag: sha256 of the registered .onnx file, checked by `vaezoo pull`


def register_onnx_model(path: str | Path, name: str, alias: str | None = None, uri: str | None = None,
                        tags: dict | None = None) -> dict:
    """Log an ONNX file as an MLflow ONNX model in a new run, register it as a version of ``name`` (tagged
    with the file's sha256), point ``alias`` at it; returns {name, version, run_id, source, sha256}."""
    import tempfile

    import mlflow.onnx
    import onnx
    from mlflow.exceptions import MlflowException

    from vaezoo.runtime.cache import sha256_file

    client, uri = _registry_client(uri)
    tracker = MlflowTracker(uri, f"register-{name}")
    with tempfile.TemporaryDirectory() as tmp:
        # one self-contained file, so the registry holds the very bytes (and sha256) that were exported
        mlflow.onnx.save_model(onnx.load(str(path)), f"{tmp}/model", save_as_external_data=False)
        sha256 = sha256_file(f"{tmp}/model/model.onnx")
        client.log_artifacts(tracker.run_id, f"{tmp}/model", "model")
    tags = {**(tags or {}), SHA256_TAG: sha256}
    tracker.set_tags(tags)
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    source = f"{client.get_run(tracker.run_id).info.artifact_uri}/model"
    mv = client.create_model_version(name, source, run_id=tracker.run_id, tags={k: str(v) for k, v in tags.items()})
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)
    tracker.end()
    return {"name": name, "version": str(mv.version), "run_id": tracker.run_id, "source": source, "sha256": sha256}


def download_registered_model(name: str, alias: str | None, version: str | None, dst: str | Path,
                              uri: str | None = None) -> tuple[Path, dict]:
    """Files of model version ``name@alias`` (or ``name/version``) downloaded into ``dst``; and
    {version, tags, source}. An unknown name, alias or version is a VaezooError."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    client, uri = _registry_client(uri)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        what = f"{name}@{alias}" if alias else f"{name}/{version}"
        raise VaezooError(f"no model version {what} in the registry at {uri}: {exc.message.splitlines()[0]}") from None
    local = mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(dst), tracking_uri=uri)
    return Path(local), {"version": str(mv.version), "tags": dict(mv.tags), "source": mv.source}
