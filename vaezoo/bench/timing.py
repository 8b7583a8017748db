"""Timed windows after warm-up, synchronised with the device, and the device's measured matmul peak.

CUDA runs asynchronously: a clock read is only meaningful once the device has finished the work queued
before it, so every clock read here follows ``synchronize(device)``. Contenders measured side by side are
interleaved window by window (A B A B ...), so a change in the machine's load hits both alike; their
ratio is taken per pair of neighbouring windows, then the median.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from vaezoo.core.errors import VaezooError

clock: Callable[[], float] = time.perf_counter  # module attribute, so a test can watch the reads


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU, which runs synchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], object], device: torch.device, n: int) -> float:
    """Seconds for ``n`` calls of ``step``, device work included."""
    synchronize(device)
    t0 = clock()
    for _ in range(n):
        step()
    synchronize(device)
    return clock() - t0


@dataclass
class Windows:
    """Per-window step rates of one contender (steps/s), and its first-call time (compile included)."""

    rates: list[float] = field(default_factory=list)
    steps_per_window: int = 0
    first_call_s: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def low(self) -> float:
        return min(self.rates)

    @property
    def high(self) -> float:
        return max(self.rates)

    @property
    def rel_spread(self) -> float:
        """(max - min) / median over the windows."""
        return (self.high - self.low) / self.median


def _same(dt: float) -> float:
    return dt


def warm_up(
    step: Callable[[], object],
    device: torch.device,
    seconds: float,
    min_steps: int = 3,
    agree: Callable[[float], float] = _same,
) -> float:
    """Run ``step`` for about ``seconds`` (at least ``min_steps`` times); return the seconds per step seen.

    Every measured time passes through ``agree`` before it steers the loop: processes that must take the same
    number of steps (DDP ranks, whose every step all-reduces) pass one that returns a value all of them share.
    """
    timed(step, device, 1)
    done, spent, n = 0, 0.0, 1
    while done < min_steps or spent < seconds:
        dt = agree(timed(step, device, n))
        done, spent = done + n, spent + dt
        if dt < seconds / 8:  # grow the batch of calls so the clock overhead stays small
            n *= 2
    return spent / done


def prepare(
    step: Callable[[], object],
    device: torch.device,
    window_s: float,
    warmup_s: float,
    agree: Callable[[float], float] = _same,
) -> Windows:
    """Time the first call on its own (where torch.compile compiles), warm up, and size a window
    (``agree``: see ``warm_up``; the window's step count then agrees too)."""
    first = timed(step, device, 1)
    per_step = warm_up(step, device, warmup_s, agree=agree)
    return Windows(steps_per_window=max(1, round(window_s / max(per_step, 1e-9))), first_call_s=first)


def run_windows(
    steps: dict[str, Callable[[], object]], prepared: dict[str, Windows], device: torch.device, windows: int
) -> dict[str, Windows]:
    """Append ``windows`` timed windows per contender to ``prepared``, interleaved."""
    names = list(steps)
    for w in range(windows):
        # rotate who goes first, so no contender always runs right after another's window
        for name in names[w % len(names) :] + names[: w % len(names)]:
            n = prepared[name].steps_per_window
            prepared[name].rates.append(n / timed(steps[name], device, n))
    return prepared


def check_windows(windows: int, window_s: float, warmup_s: float) -> None:
    """Refuse timing settings that cannot give a measurement."""
    if not (windows >= 1 and 0 < window_s < math.inf and 0 <= warmup_s < math.inf):  # nan fails too
        raise VaezooError(
            f"need windows >= 1, finite window_s > 0 and warmup_s >= 0 (got {windows}, {window_s}, {warmup_s})"
        )


def measure(
    contenders: dict[str, Callable[[], object]],
    device: torch.device,
    windows: int = 5,
    window_s: float = 0.3,
    warmup_s: float = 0.3,
) -> dict[str, Windows]:
    """Time each contender in ``windows`` interleaved windows of about ``window_s`` seconds after warm-up."""
    check_windows(windows, window_s, warmup_s)
    prepared = {name: prepare(step, device, window_s, warmup_s) for name, step in contenders.items()}
    return run_windows(contenders, prepared, device, windows)


def paired_ratio(a: Windows, b: Windows) -> float:
    """Median over neighbouring windows of rate(a) / rate(b): how many times faster a ran than b."""
    return statistics.median(ra / rb for ra, rb in zip(a.rates, b.rates))


def matmul_peak(
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    n: int | None = None,
    windows: int = 5,
    window_s: float = 0.3,
) -> float:
    """Best measured FLOP/s of an n x n ``torch.mm`` (2 n^3 FLOPs each): the device's practical peak."""
    n = n or (8192 if device.type == "cuda" else 2048)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=g).to(dtype)
    b = torch.randn(n, n, device=device, generator=g).to(dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    res = measure({"mm": lambda: torch.mm(a, b, out=c)}, device, windows=windows, window_s=window_s, warmup_s=window_s)
    return 2 * n**3 * max(res["mm"].rates)
