"""``pull``: resolve a shipped decoder name or a hash-pinned URL to a verified file in the cache.

MLflow registry URIs (``models:/NAME@ALIAS``) need mlflow and are handled by ``vaezoo.tracking.registry``.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path, PurePosixPath

from vaezoo.core.errors import VaezooError
from vaezoo.runtime.cache import MAX_DOWNLOAD_BYTES, cache_dir, download, is_valid, read_checked, write_cached
from vaezoo.runtime.catalog import FILE_RE, check_file_name, pretrained_dir, pretrained_entry

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def parse_url(spec: str) -> tuple[str, str, str]:
    """``https://host/path/file.onnx#sha256=HEX`` -> (url without fragment, sha256, file name)."""
    parts = urllib.parse.urlsplit(spec)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise VaezooError(f"not an http(s) URL: {spec!r}")
    key, _, value = parts.fragment.partition("=")
    value = value.lower()
    if key != "sha256" or not SHA256_RE.match(value):
        raise VaezooError(f"a URL must pin its content: append '#sha256=<64 hex digits>' to {spec!r}")
    name = urllib.parse.unquote(PurePosixPath(parts.path).name)
    if not FILE_RE.match(name) or ".." in name:
        name = "decoder.onnx"
    url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))
    return url, value, name


def pull_name(name: str, cache: str | os.PathLike | None = None, progress: bool = False,
              max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """A shipped decoder, copied (hash-checked) into the cache; a warm cache is used as is. When the cache cannot
    be written (a read-only container, an unwritable $VAEZOO_CACHE), the hash-checked packaged copy itself."""
    entry = pretrained_entry(name)
    dest = cache_dir(cache) / "pretrained" / f"{entry.name}.onnx"
    if is_valid(dest, entry.sha256):
        return dest
    src = pretrained_dir() / check_file_name(entry.file)
    if src.is_file():
        data = read_checked(src, entry.sha256)
        try:
            return write_cached(dest, data)
        except VaezooError:  # only the write can fail here: the packaged file was read and checked above
            return src
    if entry.url:
        return download(entry.url, dest, entry.sha256, progress, max_bytes=max_bytes)
    raise VaezooError(f"pretrained decoder '{name}' is listed but its file '{entry.file}' is not installed")


def pull_url(spec: str, cache: str | os.PathLike | None = None, progress: bool = False,
             max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """Download a ``URL#sha256=HEX`` into ``<cache>/url/<sha256>/``; a warm cache needs no network."""
    url, sha256, fname = parse_url(spec)
    dest = cache_dir(cache) / "url" / sha256 / fname
    if is_valid(dest, sha256):
        return dest
    return download(url, dest, sha256, progress, max_bytes=max_bytes)


def pull(spec: str, cache: str | os.PathLike | None = None, progress: bool = False,
         max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """Local path of a verified decoder file for a shipped name or an ``http(s)://...#sha256=HEX`` URL (a download
    is refused past ``max_bytes``)."""
    if not isinstance(spec, str) or not spec:
        raise VaezooError(f"nothing to pull: {spec!r}")
    if spec.startswith(("http://", "https://")):
        return pull_url(spec, cache, progress, max_bytes)
    if spec.startswith("models:/"):
        raise VaezooError("models:/ URIs need mlflow: use `vaezoo pull` or vaezoo.tracking.registry.pull (pip install vaezoo[track])")
    if "://" in spec:
        raise VaezooError(f"unsupported scheme in {spec!r}: pull takes a decoder name, an http(s) URL or models:/NAME@ALIAS")
    return pull_name(spec, cache, progress, max_bytes)
