"""Intervals over seeds: every number a study gets from training is a mean over >= 3 seeds with a Student-t
interval, and claims are judged on paired (same-seed) differences, so seed-to-seed variation that two arms
share cancels out."""

from __future__ import annotations

import math
from collections.abc import Sequence

from vaezoo.core.intervals import LEVEL, t_interval

__all__ = ["LEVEL", "direction", "fmt", "paired", "t_interval", "verdict"]


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


def verdict(checks: dict[str, str], wanted: dict[str, str], n_seeds: int, text: str, noun: str = "direction") -> tuple[str, str]:
    """(verdict, why) from the direction each check found (``direction``) and the one the claim wants: holds when
    every one is as wanted, does not hold when one is reversed, depends when some are not resolved."""
    if all(checks[k] == wanted[k] for k in checks):
        return "holds", f"every {noun} holds with its interval excluding 0 ({text})."
    if any(checks[k] not in ("zero", wanted[k]) for k in checks):
        return "does not hold", f"one {noun} is reversed ({text})."
    return "depends", f"some {noun}s are not resolved at {n_seeds} seeds ({text})."
