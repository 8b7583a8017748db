"""The local cache of decoders, and hash-checked, atomic downloads into it (standard library only).

Why not pooch: it would bring requests, urllib3, certifi, idna, charset-normalizer and platformdirs into the
service install, which the runtime keeps to numpy + onnxruntime. What pooch would do for us is done here in
a few lines: stream to a temp file beside the target while hashing, check size and sha256, then
``os.replace`` (via ``vaezoo.core.io.atomic_write``, which deletes the temp file on any failure or interrupt).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from vaezoo.core.errors import VaezooError
from vaezoo.core.io import atomic_write, atomic_write_bytes

CACHE_ENV = "VAEZOO_CACHE"
CHUNK = 1 << 16
USER_AGENT = "vaezoo-runtime"


def cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    """``explicit``, else $VAEZOO_CACHE, else the platform's user cache dir (platformdirs' convention)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    # platformdirs.user_cache_dir("vaezoo", appauthor=False), written out so the runtime needs no extra package
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "vaezoo" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "vaezoo"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vaezoo"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_valid(path: Path, sha256: str) -> bool:
    """True if ``path`` exists and has this sha256 (a warm cache entry needs no network)."""
    return path.is_file() and sha256_file(path) == sha256


class _PlainBar:
    """Byte counter on stderr, for installs without tqdm."""

    def __init__(self, total: int | None, label: str) -> None:
        self.total, self.label, self.done = total, label, 0

    def update(self, n: int) -> None:
        self.done += n
        of = f" of {self.total}" if self.total else ""
        print(f"\r{self.label}: {self.done}{of} bytes", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        print(file=sys.stderr)


def _progress_bar(total: int | None, label: str):
    """A tqdm bar when tqdm is installed (it is with the CLI); else a plain counter on stderr."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainBar(total, label)
    return tqdm(total=total, unit="B", unit_scale=True, desc=label)


def download(url: str, dest: Path, sha256: str, progress: bool = False, timeout: float = 30.0) -> Path:
    """Fetch ``url`` into ``dest``: nothing appears at ``dest`` unless every byte arrived and the sha256 matches."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})

    def write(tmp: str) -> None:
        h = hashlib.sha256()
        received = 0
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp, open(tmp, "wb") as fh:
                length = resp.headers.get("Content-Length")
                expected = int(length) if length and length.isdigit() else None
                bar = _progress_bar(expected, dest.name) if progress else None
                try:
                    while block := resp.read(CHUNK):
                        fh.write(block)
                        h.update(block)
                        received += len(block)
                        if bar:
                            bar.update(len(block))
                finally:
                    if bar:
                        bar.close()
        except urllib.error.HTTPError as exc:
            raise VaezooError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__} {exc}".strip()
            raise VaezooError(f"download of {url} failed: {reason}; nothing was cached") from None
        if expected is not None and received != expected:
            raise VaezooError(f"download of {url} was cut short ({received} of {expected} bytes); nothing was cached")
        if h.hexdigest() != sha256:
            raise VaezooError(
                f"sha256 mismatch for {url}: expected {sha256}, got {h.hexdigest()}; the download was deleted"
            )

    atomic_write(dest, write)
    return dest


def copy_checked(src: Path, dest: Path, sha256: str) -> Path:
    """Copy ``src`` into the cache atomically, refusing it unless its sha256 matches."""
    data = src.read_bytes()
    got = sha256_bytes(data)
    if got != sha256:
        raise VaezooError(f"'{src}' has sha256 {got}, expected {sha256}: the file is corrupt")
    atomic_write_bytes(dest, data)
    return dest
