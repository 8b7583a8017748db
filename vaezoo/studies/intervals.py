"""Intervals over seeds: every number a study gets from training is a mean over >= 3 seeds with a Student-t
interval, and claims are judged on paired (same-seed) differences, so seed-to-seed variation that two arms
share cancels out."""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats as _scipy_stats

LEVEL = 0.95


def t_interval(values: Sequence[float], level: float = LEVEL) -> dict:
    """Mean and two-sided Student-t interval of independent draws (one per seed): {mean, lo, hi, n, values}.
    With one value the interval is (nan, nan): a single seed says nothing about its spread."""
    xs = [float(v) for v in values]
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return {"mean": mean, "lo": math.nan, "hi": math.nan, "n": n, "values": xs}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(_scipy_stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n, "values": xs}


def paired(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> dict:
    """The t-interval of a - b over seeds (a[i] and b[i] trained with the same seed)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    return t_interval([x - y for x, y in zip(a, b)], level)


def fmt(iv: dict, digits: int = 3) -> str:
    """'mean [lo, hi]' for a report table."""
    if math.isnan(iv["lo"]):
        return f"{iv['mean']:.{digits}f}"
    return f"{iv['mean']:.{digits}f} [{iv['lo']:.{digits}f}, {iv['hi']:.{digits}f}]"


def direction(diff: dict) -> str:
    """Where a paired difference lies: 'above' 0 (the interval excludes 0 from below), 'below', or 'zero'
    (the interval holds 0: no difference detected at this many seeds)."""
    if diff["lo"] > 0:
        return "above"
    if diff["hi"] < 0:
        return "below"
    return "zero"
