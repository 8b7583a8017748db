"""The pytest-benchmark suite (``make bench-ci``): paired benchmarks whose speed ratios CI checks.

A pair does the same work two ways: the subject (vaezoo's path) and a baseline (a plain loop). The
``side_by_side`` fixture times them interleaved, round by round (baseline, subject, baseline, subject...),
so load from other jobs on a shared machine falls on both alike. pytest-benchmark records the subject's
rounds; the baseline's times and the speedup (median over rounds of baseline time / subject time) go into
``extra_info``, with a distribution-free 99% interval for that median (order statistics of the paired
ratios). benchmarks/check_ratios.py fails CI where a speedup is below its ``min_speedup`` beyond that
interval: where the whole interval lies below the floor, so round-to-round noise cannot fail CI.

Threads: ``VAEZOO_BENCH_THREADS`` (default 1): two OpenMP threads competing with other jobs for two
cores can slow a step down many times over, one thread cannot.
"""

from __future__ import annotations

import math
import os
import statistics
import time

import pytest
import torch


@pytest.fixture(autouse=True)
def bench_threads():
    """Every benchmark starts at VAEZOO_BENCH_THREADS threads (a test may set its own); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("VAEZOO_BENCH_THREADS", "1")))
    yield
    torch.set_num_threads(before)


RATIO_LEVEL = 0.99


def median_interval(values: list[float], level: float = RATIO_LEVEL) -> tuple[float, float, float]:
    """(lo, hi, achieved level): the order statistics x_(j) <= median <= x_(n+1-j) with the largest j whose
    coverage 1 - 2 P(Binomial(n, 1/2) < j) is at least ``level`` (no assumption on the ratios' distribution);
    with too few rounds for ``level``, the range, and the level it achieves."""
    xs = sorted(values)
    n = len(xs)
    below = 0.0  # P(Binomial(n, 1/2) < j)
    j, achieved = 1, 1 - 2 * 0.5**n
    for k in range(1, n // 2 + 1):
        below += math.comb(n, k - 1) / 2**n
        if 1 - 2 * below < level:
            break
        j, achieved = k, 1 - 2 * below
    return xs[j - 1], xs[n - j], achieved


@pytest.fixture
def side_by_side(benchmark):
    """``side_by_side(pair, subject, baseline, rounds, warmup_rounds=3, min_speedup=None, work=1)``:
    benchmark ``subject()`` with a ``baseline()`` call timed before each of its rounds; returns the
    subject's result. ``work``: items one call processes (samples, images), for the items/s in extra_info."""

    def run(
        pair, subject, baseline, rounds: int, warmup_rounds: int = 3, min_speedup: float | None = None, work: float = 1
    ):
        base: list[float] = []

        def time_baseline():
            t0 = time.perf_counter()
            baseline()
            base.append(time.perf_counter() - t0)

        benchmark.group = pair
        result = benchmark.pedantic(subject, setup=time_baseline, rounds=rounds, warmup_rounds=warmup_rounds)
        if benchmark.disabled:  # --benchmark-disable: one call, nothing measured
            return result
        subj = list(benchmark.stats.stats.data)
        base = base[warmup_rounds:]
        ratios = [b / s for b, s in zip(base, subj)]
        lo, hi, level = median_interval(ratios)
        benchmark.extra_info.update(
            pair=pair,
            speedup=statistics.median(ratios),
            speedup_lo=lo,
            speedup_hi=hi,
            speedup_level=level,
            work=work,
            subject_items_per_s=work / statistics.median(subj),
            baseline_items_per_s=work / statistics.median(base),
            baseline_median_s=statistics.median(base),
            baseline_min_s=min(base),
            threads=torch.get_num_threads(),
        )
        if min_speedup is not None:
            benchmark.extra_info["min_speedup"] = min_speedup
        return result

    return run


def pytest_benchmark_update_json(config, benchmarks, output_json) -> None:
    """Collect every pair's speedup at the top of the JSON too."""
    output_json["ratios"] = {
        b["extra_info"]["pair"]: {k: b["extra_info"].get(k) for k in ("speedup", "min_speedup")} | {"name": b["name"]}
        for b in output_json["benchmarks"]
        if "speedup" in (b.get("extra_info") or {})
    }
