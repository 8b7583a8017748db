"""The pretrained decoders shipped in ``vaezoo/pretrained/``: their manifest, and name checks.

A name is ``architecture.tag`` (e.g. ``mlp-vae.mnist5k``): lower-case letters, digits, ``-`` and ``_``,
one dot. Names are checked before they touch a path, so no name can reach outside the cache.
"""

from __future__ import annotations

import re
from pathlib import Path

from vaezoo.core.configs import read_json_object
from vaezoo.core.errors import VaezooError
from vaezoo.pretrained import PretrainedEntry

MANIFEST_FORMAT = "vaezoo-pretrained-1"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\.[a-z0-9][a-z0-9_-]{0,63}$")
FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def pretrained_dir() -> Path:
    """The package folder that holds the shipped .onnx files and manifest.json."""
    return Path(__file__).resolve().parent.parent / "pretrained"


def manifest_path() -> Path:
    return pretrained_dir() / "manifest.json"


def load_manifest(path: Path | None = None) -> dict:
    """The manifest as data; an empty one when none has been built yet."""
    path = path or manifest_path()
    if not path.is_file():
        return {"format": MANIFEST_FORMAT, "models": []}
    data = read_json_object(path, "pretrained manifest")
    if data.get("format") != MANIFEST_FORMAT:
        raise VaezooError(f"'{path}' is not a vaezoo pretrained manifest (format {MANIFEST_FORMAT} expected)")
    return data


def check_name(name: str) -> str:
    """``name`` itself if it is a well-formed ``architecture.tag``; else a clear error."""
    # NAME_RE allows exactly one dot, followed by a letter or digit, so no '..' can pass it
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise VaezooError(
            f"invalid decoder name {name!r}: expected 'architecture.tag' (lower-case letters, digits, '-', '_', one dot)"
        )
    return name


def check_file_name(name: str) -> str:
    """A bare file name (no folders, no leading dot) that is safe to join to a cache path."""
    if not FILE_RE.match(name) or ".." in name:
        raise VaezooError(f"unsafe file name {name!r}")
    return name


def list_pretrained() -> list[PretrainedEntry]:
    """The manifest entries of the shipped decoders, in manifest order, each checked as a typed record."""
    models = load_manifest()["models"]
    if not isinstance(models, list):
        raise VaezooError(f"the pretrained manifest's 'models' must be a list, got {type(models).__name__}")
    return [PretrainedEntry.from_dict(m) for m in models]


def pretrained_entry(name: str) -> PretrainedEntry:
    """The manifest entry of one shipped decoder."""
    check_name(name)
    for entry in list_pretrained():
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in list_pretrained()) or "none built yet"
    raise VaezooError(f"unknown pretrained decoder '{name}'; available: {known}")
