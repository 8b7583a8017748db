"""Benchmark results on disk: one way to name an environment in a file name, one CSV writer.

timm-style: a results file is named by what produced it (CPU or GPU model, torch and runtime versions,
threads), so rows from different machines never mix in one file.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from vaezoo.core.io import atomic_write_text


def slug(text: str) -> str:
    """'Intel(R) Xeon(R) Platinum 8480+' -> 'intel-xeon-platinum-8480': lower case, marks dropped, one '-'."""
    text = re.sub(r"\((r|tm|c)\)", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text()))) if path.is_file() else []


def _cell(value):
    return f"{value:.6g}" if isinstance(value, float) else value


def write_csv(path: Path, records: list[dict], columns: list[str], key: tuple[str, ...] | None = None) -> list[dict]:
    """Write ``records`` as CSV at ``path``, atomically; floats with 6 significant digits. With ``key``, stored
    lines are kept and a record replaces the stored line with the same key (rows sorted by key)."""
    rows = [{c: _cell(v) for c, v in r.items()} for r in records]
    if key is not None:

        def k(rec: dict) -> tuple:
            return tuple(str(rec[f]) for f in key)

        merged = {k(r): r for r in read_csv(path)}
        merged.update({k(r): r for r in rows})
        rows = sorted(merged.values(), key=lambda r: tuple(int(v) if str(v).isdigit() else str(v) for v in k(r)))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return rows
