"""Fail CI on a speed-ratio regression, read from one pytest-benchmark JSON (one run, one machine).

    python benchmarks/check_ratios.py .benchmarks/ci.json

Paired benchmarks (benchmarks/conftest.py, ``side_by_side``) record in ``extra_info`` the speedup of
vaezoo's path over its baseline, measured interleaved in that same run, and the floor ``min_speedup``
the suite promises, with a 99% interval for the speedup (``speedup_lo``/``speedup_hi``, the median of the
paired ratios of the rounds). The check fails only where the speedup's whole interval lies below its floor
(a regression beyond the run's own noise; without an interval, the speedup itself), or where the speedup
is not a finite number;
absolute times, noisy on a shared machine, are never compared. Exit status: 0 all floors met; 1 a floor
missed, a NaN or infinite speedup, or no pair found (a suite that measured nothing checks nothing);
2 unreadable input, or a floor that is not a finite number > 0.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def pair_ratios(benchmarks: list[dict]) -> dict[str, dict]:
    """pair name -> {speedup, min_speedup, name} for every benchmark that recorded a speedup."""
    out = {}
    for b in benchmarks:
        info = b.get("extra_info") or {}
        if "speedup" in info:
            speedup = float(info["speedup"])
            out[info.get("pair", b["name"])] = {
                "speedup": speedup,
                "hi": float(info.get("speedup_hi", speedup)),
                "lo": float(info.get("speedup_lo", speedup)),
                "min_speedup": info.get("min_speedup"),
                "name": b["name"],
            }
    return dict(sorted(out.items()))


def floor_ok(floor: object) -> bool:
    """No floor, or a finite number > 0 (a NaN floor passes everything, a floor <= 0 checks nothing)."""
    return floor is None or (isinstance(floor, (int, float)) and math.isfinite(floor) and floor > 0)


def check(path: str | Path) -> int:
    try:
        ratios = pair_ratios(json.loads(Path(path).read_text())["benchmarks"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: cannot read benchmark results from '{path}': {exc}", file=sys.stderr)
        return 2
    if not ratios:
        print(f"error: no paired benchmark in '{path}' (nothing to check)", file=sys.stderr)
        return 1
    bad_floors = [f"{pair}: {r['min_speedup']!r}" for pair, r in ratios.items() if not floor_ok(r["min_speedup"])]
    if bad_floors:
        print(f"error: min_speedup must be a finite number > 0 in '{path}' ({', '.join(bad_floors)})", file=sys.stderr)
        return 2
    failed = 0
    print(f"{'pair':48s} {'speedup':>8s} {'99% interval':>17s} {'floor':>6s}")
    for pair, r in ratios.items():
        floor = r["min_speedup"]
        s = r["speedup"]
        # `nan < floor` is False: a non-finite speedup (a broken measurement) fails explicitly, floor or not
        bad = not math.isfinite(s) or (floor is not None and r["hi"] < floor)
        failed += bad
        floor_txt = f"{floor:.2f}" if floor is not None else "-"
        interval = f"[{r['lo']:.3f}, {r['hi']:.3f}]"
        print(f"{pair:48s} {s:8.3f} {interval:>17s} {floor_txt:>6s}  {'REGRESSION' if bad else 'ok'}")
    if failed:
        print(f"{failed} speed ratio(s) below their floor beyond their interval", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python benchmarks/check_ratios.py BENCHMARK.json", file=sys.stderr)
        sys.exit(2)
    sys.exit(check(sys.argv[1]))
