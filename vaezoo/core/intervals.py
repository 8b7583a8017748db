"""The Student-t interval of a mean over independent draws (seeds, sample sets): one definition for the studies
and the sample-quality metric. scipy is imported when an interval is made (it takes about a second)."""

from __future__ import annotations

import math
from collections.abc import Sequence

LEVEL = 0.95


def t_interval(values: Sequence[float], level: float = LEVEL) -> dict:
    """Mean and two-sided Student-t interval of independent draws: {mean, lo, hi, n, values}.
    With one value the interval is (nan, nan): a single draw says nothing about its spread."""
    xs = [float(v) for v in values]
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return {"mean": mean, "lo": math.nan, "hi": math.nan, "n": n, "values": xs}
    from scipy.stats import t

    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n, "values": xs}


def proportion_interval(hits: int, n: int, level: float = LEVEL) -> dict:
    """Share of ``hits`` in ``n`` independent trials and its exact (Clopper-Pearson) interval: {share, lo, hi, hits, n}.
    Exact rather than normal-approximate because the shares judged here (a test's size) sit near 0."""
    from scipy.stats import beta

    a = (1 - level) / 2
    lo = float(beta.ppf(a, hits, n - hits + 1)) if hits > 0 else 0.0
    hi = float(beta.ppf(1 - a, hits + 1, n - hits)) if hits < n else 1.0
    return {"share": hits / n, "lo": lo, "hi": hi, "hits": hits, "n": n}
