"""The MLflow model registry (``vaezoo export --register``, ``vaezoo pull models:/NAME@ALIAS``), and the one
function behind ``vaezoo pull``: a shipped decoder name, a ``URL#sha256=HEX`` or ``models:/NAME@ALIAS`` -> a
verified file in the local cache. Names and URLs go through ``vaezoo.runtime`` (no torch, no mlflow)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from vaezoo.core.errors import VaezooError
from vaezoo.core.io import atomic_write_bytes
from vaezoo.runtime.cache import MAX_DOWNLOAD_BYTES, cache_dir, is_valid, sha256_bytes
from vaezoo.runtime.pull import pull as pull_runtime
from vaezoo.tracking.runs import MlflowTracker, tracking_uri


def _registry_client(uri: str | None):
    try:
        import mlflow  # noqa: F401
    except ImportError as exc:
        raise VaezooError("the MLflow model registry needs mlflow: `pip install mlflow` (or vaezoo[track])") from exc
    from vaezoo.tracking.store import connect

    uri = tracking_uri(uri)
    return connect(uri, registry=True), uri


SHA256_TAG = "vaezoo.sha256"  # model-version tag: sha256 of the registered .onnx file, checked by `vaezoo pull`


def register_onnx_model(path: str | Path, name: str, alias: str | None = None, uri: str | None = None,
                        tags: dict | None = None, parent_run_id: str | None = None) -> dict:
    """Log an ONNX file as an MLflow ONNX model (``vaezoo.tracking.models``: signature, input example, pip
    requirements) in a new run, register it as a version of ``name`` (tagged with the file's sha256), point
    ``alias`` at it; returns {name, version, run_id, source, sha256, uri}."""
    from mlflow.exceptions import MlflowException

    from vaezoo.runtime.cache import sha256_file
    from vaezoo.tracking import ui
    from vaezoo.tracking.models import save_onnx_model
    from vaezoo.tracking.provenance import git_state

    client, uri = _registry_client(uri)
    tracker = MlflowTracker(uri, f"publish-{name}")
    ui.present(tracker, f"publish-{name}", "publish", git_state()["git_sha"], parent_run_id, entry="vaezoo publish")
    with tempfile.TemporaryDirectory() as tmp:
        save_onnx_model(path, f"{tmp}/model")
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
    return {"name": name, "version": str(mv.version), "run_id": tracker.run_id, "source": source, "sha256": sha256,
            "uri": f"models:/{name}@{alias}" if alias else f"models:/{name}/{mv.version}"}


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


REGISTRY_RE = re.compile(
    r"^models:/(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})(?:@(?P<alias>[A-Za-z0-9_-]{1,64})|/(?P<version>[0-9]{1,9}))$"
)


def parse_registry_uri(spec: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> (name, alias, version)."""
    m = REGISTRY_RE.match(spec)
    if not m or ".." in m["name"]:
        raise VaezooError(f"invalid registry URI {spec!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return m["name"], m["alias"], m["version"]


def pull_registry(spec: str, cache: str | os.PathLike | None = None, tracking_uri: str | None = None) -> Path:
    """The ONNX file of a registered model version, copied into ``<cache>/mlflow/NAME/vVERSION/``.

    If the version carries a ``vaezoo.sha256`` tag (``vaezoo export --register`` sets it), the file must match it.
    """
    name, alias, version = parse_registry_uri(spec)
    with tempfile.TemporaryDirectory() as tmp:
        local, info = download_registered_model(name, alias, version, tmp, tracking_uri)
        files = sorted(local.rglob("*.onnx")) if local.is_dir() else [local]
        if len(files) != 1:
            raise VaezooError(f"{spec} holds {len(files)} .onnx files; expected exactly one")
        # read once, so the bytes that are hashed are the bytes that are written
        data = files[0].read_bytes()
        sha256 = sha256_bytes(data)
        expected = info["tags"].get(SHA256_TAG)
        if expected and expected != sha256:
            raise VaezooError(f"sha256 mismatch for {spec}: the registry says {expected}, the file has {sha256}")
        dest = cache_dir(cache) / "mlflow" / name / f"v{info['version']}" / "decoder.onnx"
        if is_valid(dest, sha256):
            return dest
        atomic_write_bytes(dest, data)
        return dest


def pull_any(spec: str, cache: str | os.PathLike | None = None, progress: bool = False,
             tracking_uri: str | None = None, max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """Local path of a verified decoder for any spec ``vaezoo pull`` takes (a download is refused past ``max_bytes``)."""
    if isinstance(spec, str) and spec.startswith("models:/"):
        return pull_registry(spec, cache, tracking_uri)
    return pull_runtime(spec, cache, progress, max_bytes)
