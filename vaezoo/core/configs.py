"""Typed configs: dataclasses that round-trip through JSON, with strict key checking and a content hash;
and the user-level dict layer under them (``--set KEY=VALUE``, merging a file over defaults, diffs)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from vaezoo.core.errors import VaezooError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict:
    """A dataclass as plain JSON-able data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _coerce(tp: Any, value: Any, where: str, build: bool = True) -> Any:
    """``value`` checked against type ``tp`` (and converted where JSON loses the type: lists to tuples, ints
    to floats); ``build=False`` checks a nested config's keys and types without building it."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise VaezooError(f"config '{where}' must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=where + ".") if build else check_types(tp, value, prefix=where + ".")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise VaezooError(f"config '{where}' must be a list, got {value!r}")
        (inner, *_rest) = typing.get_args(tp) or (Any,)
        return tuple(_coerce(inner, v, where, build) for v in value)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(non_none[0], value, where, build)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise VaezooError(f"config '{where}' must be {tp.__name__}, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise VaezooError(f"config '{where}' must be int, got {value!r}")
    return value


def _known_hints(cls: type, data: dict, prefix: str) -> dict[str, Any]:
    """The field types of ``cls``, once every key of ``data`` is known to be one of its fields."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise VaezooError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys here: {', '.join(sorted(fields))}"
        )
    return hints


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build ``cls`` from plain data; an unknown key is an error that names it and the valid ones."""
    hints = _known_hints(cls, data, prefix)
    return cls(**{k: _coerce(hints[k], v, prefix + k) for k, v in data.items()})


def check_types(cls: type, data: dict, prefix: str = "") -> None:
    """Check user data against the keys and types of ``cls`` without building it (no ``__post_init__``):
    for data that is completed before it is built (a model variant's defaults go under it), so that code
    reading it first meets mappings where mappings belong and a bad value is one error naming its key."""
    hints = _known_hints(cls, data, prefix)
    for k, v in data.items():
        _coerce(hints[k], v, prefix + k, build=False)


def config_hash(cfg: Any) -> str:
    """sha256 of the canonical JSON of a config (sorted keys, no whitespace); ``cfg`` a dataclass or its dict."""
    data = cfg if isinstance(cfg, dict) else to_dict(cfg)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _missing_keys(cfg: Any, data: dict, prefix: str = "") -> list[str]:
    """Dotted keys of dataclass ``cfg`` that ``data`` (already accepted by from_dict) lacks."""
    out = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name not in data:
            out.append(prefix + f.name)
        elif dataclasses.is_dataclass(value):
            out += _missing_keys(value, data[f.name], f"{prefix}{f.name}.")
    return out


@dataclasses.dataclass(frozen=True)
class Recorded:
    """A config as it was written down with its hash. ``cfg`` reads keys added since as their defaults;
    ``hash`` is the recorded one, which the checkpoints and exports made from it carry; ``missing`` names
    the keys the record lacks (empty for a record written by this version)."""

    cfg: Any
    hash: str
    missing: tuple[str, ...]


def load_recorded(cls: type[T], config: dict, recorded_hash: str, what: str) -> Recorded:
    """Check a written config against its recorded hash (the hash of the dict as written, so a key added
    to ``cls`` later does not invalidate it), then build it."""
    if config_hash(config) != recorded_hash:
        raise VaezooError(f"{what} does not match its recorded config_hash (edited?)")
    cfg = from_dict(cls, config)
    return Recorded(cfg, recorded_hash, tuple(_missing_keys(cfg, config)))


def read_json_object(path, what: str) -> dict:
    """A JSON file that must hold an object (a config, a run record); anything else is one clear error."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise VaezooError(f"cannot read {what} '{path}': {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VaezooError(f"{what} '{path}' is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict):
        raise VaezooError(f"{what} '{path}' must hold a JSON object, got a {type(data).__name__}")
    return data


def save_json(path, data: Any) -> None:
    """Write JSON atomically: a temp file beside the target, then os.replace."""
    from vaezoo.core.io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def parse_value(text: str) -> Any:
    """A ``--set`` value: JSON where it is JSON (numbers, lists, true), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_path(d: dict, dotted: str, value: Any) -> None:
    """``d[a][b][c] = value`` for ``dotted`` = 'a.b.c', creating the mappings on the way."""
    keys = dotted.split(".")
    for i, k in enumerate(keys[:-1]):
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise VaezooError(f"cannot set '{dotted}': '{'.'.join(keys[: i + 1])}' holds {d!r}, not a mapping of keys")
    d[keys[-1]] = value


def apply_sets(user: dict, sets: tuple[str, ...]) -> None:
    """``--set KEY=VALUE`` options into ``user`` (values parsed as JSON where they are JSON)."""
    for item in sets:
        if "=" not in item:
            raise VaezooError(f"--set expects KEY=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        set_path(user, key, parse_value(value))


def merge(base: dict, over: dict) -> dict:
    """``over`` laid over ``base``, mapping by mapping (neither is changed)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for every dotted key whose value differs between ``a`` and ``b``."""
    out = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.append(f"{prefix}{k}: {a.get(k)!r} -> {b.get(k)!r}")
    return out
