"""Atomic file writes: nothing already written is lost if a process dies mid-write."""

from __future__ import annotations

import glob
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from vaezoo.core.errors import VaezooError


def make_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) now, before any work whose results it will hold; a folder that
    cannot be made is one clear error, not a traceback after minutes of work."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VaezooError(f"cannot create {what} '{path}': {exc.strerror or exc}") from None
    return path


TEMP_SUFFIX = ".tmp"


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """The temp files ``atomic_write`` makes beside ``path`` (``.NAME.XXXXXXXX.tmp``, mkstemp's random part without
    dots) that are still there: a process killed mid-write leaves its temp file behind."""
    path = Path(path)
    pattern = re.compile(re.escape(_temp_prefix(path)) + r"\w+" + re.escape(TEMP_SUFFIX))
    return sorted(p for p in path.parent.glob(f"{glob.escape(_temp_prefix(path))}*") if pattern.fullmatch(p.name))


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync, then move the temp file over ``path`` in one step. A path the system
    refuses (no such folder, no permission, a full disk) is a VaezooError naming ``path``, not the temp file."""
    path = Path(path)
    make_dir(path.parent, "folder")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual mode
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise VaezooError(f"cannot write '{path}': {exc.strerror or exc}") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    atomic_write(path, write)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    atomic_write(path, write)
