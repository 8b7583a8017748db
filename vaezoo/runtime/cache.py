"""The local cache of decoders, and hash-checked, atomic downloads into it (standard library only).

Why not pooch: it would bring requests, urllib3, certifi, idna, charset-normalizer and platformdirs into the
service install, which the runtime keeps to numpy + onnxruntime. What pooch would do for us is done here in
a few lines: stream to a temp file beside the target while hashing, check size and sha256, then
``os.replace`` (via ``vaezoo.core.io.atomic_write``, which deletes the temp file on any failure or interrupt).
"""

from __future__ import annotations

import contextlib
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
# A decoder is a few MB (the largest shipped one is 2.2 MB); a server sending more than this is misconfigured or
# hostile, and is not allowed to fill the disk. Raise it per call with ``max_bytes``.
MAX_DOWNLOAD_BYTES = 256 << 20
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


@contextlib.contextmanager
def _removing_new_folders(folder: Path):
    """On any failure, remove the folders on the way to ``folder`` that did not exist before and are still empty, so
    a failed pull leaves the cache as it was (no empty ``url/<sha256>/``)."""
    new = []
    while not folder.exists() and folder != folder.parent:
        new.append(folder)  # deepest first
        folder = folder.parent
    try:
        yield
    except BaseException:
        for made in new:
            try:
                made.rmdir()
            except OSError:  # another process has put a file there meanwhile: it is theirs now
                break
        raise


def download(url: str, dest: Path, sha256: str, progress: bool = False, timeout: float = 30.0,
             max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """Fetch ``url`` into ``dest``: nothing appears at ``dest`` unless every byte arrived, there were at most
    ``max_bytes`` of them, and the sha256 matches; a failure leaves no file and no new folder."""
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise VaezooError(f"max_bytes must be an int >= 1, got {max_bytes!r}")
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    too_big = f"download of {url} exceeds the limit of {max_bytes} bytes (max_bytes); nothing was cached"

    def write(tmp: str) -> None:
        h = hashlib.sha256()
        received = 0
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp, open(tmp, "wb") as fh:
                length = resp.headers.get("Content-Length")
                expected = int(length) if length and length.isdigit() else None
                if expected is not None and expected > max_bytes:
                    raise VaezooError(f"{too_big} (the server announces {expected})")
                bar = _progress_bar(expected, dest.name) if progress else None
                try:
                    while block := resp.read(CHUNK):
                        received += len(block)
                        if received > max_bytes:  # a server may send more than it announced, or announce nothing
                            raise VaezooError(too_big)
                        fh.write(block)
                        h.update(block)
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

    with _removing_new_folders(dest.parent):
        atomic_write(dest, write)
    return dest


def read_checked(src: Path, sha256: str) -> bytes:
    """The bytes of ``src``, refused unless their sha256 matches (read once: the bytes hashed are the bytes used)."""
    data = src.read_bytes()
    got = sha256_bytes(data)
    if got != sha256:
        raise VaezooError(f"'{src}' has sha256 {got}, expected {sha256}: the file is corrupt")
    return data


def write_cached(dest: Path, data: bytes) -> Path:
    """Write ``data`` into the cache atomically; a failure leaves no file and no new folder."""
    with _removing_new_folders(dest.parent):
        atomic_write_bytes(dest, data)
    return dest
