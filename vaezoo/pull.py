"""``vaezoo pull``: a shipped decoder name, a ``URL#sha256=HEX``, or ``models:/NAME@ALIAS`` (MLflow registry)
-> a verified file in the local cache. Names and URLs go through ``vaezoo.runtime`` (no torch, no mlflow);
registry URIs through ``vaezoo.tracking`` (mlflow)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from vaezoo.errors import VaezooError
from vaezoo.io import atomic_write_bytes
from vaezoo.runtime.cache import MAX_DOWNLOAD_BYTES, cache_dir, is_valid, sha256_bytes
from vaezoo.runtime.pull import pull as pull_runtime

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
    from vaezoo import tracking

    name, alias, version = parse_registry_uri(spec)
    with tempfile.TemporaryDirectory() as tmp:
        local, info = tracking.download_registered_model(name, alias, version, tmp, tracking_uri)
        files = sorted(local.rglob("*.onnx")) if local.is_dir() else [local]
        if len(files) != 1:
            raise VaezooError(f"{spec} holds {len(files)} .onnx files; expected exactly one")
        # read once: the bytes hashed are the bytes written (re-reading to check against a hash of the
        # same file could never fail)
        data = files[0].read_bytes()
        sha256 = sha256_bytes(data)
        expected = info["tags"].get(tracking.SHA256_TAG)
        if expected and expected != sha256:
            raise VaezooError(f"sha256 mismatch for {spec}: the registry says {expected}, the file has {sha256}")
        dest = cache_dir(cache) / "mlflow" / name / f"v{info['version']}" / "decoder.onnx"
        if is_valid(dest, sha256):
            return dest
        atomic_write_bytes(dest, data)
        return dest


def pull(spec: str, cache: str | os.PathLike | None = None, progress: bool = False,
         tracking_uri: str | None = None, max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """Local path of a verified decoder for any spec ``vaezoo pull`` takes (a download is refused past ``max_bytes``)."""
    if isinstance(spec, str) and spec.startswith("models:/"):
        return pull_registry(spec, cache, tracking_uri)
    return pull_runtime(spec, cache, progress, max_bytes)
