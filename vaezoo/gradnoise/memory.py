"""Peak memory of a call, from torch's profiler: every allocation and free the call makes, replayed in order.

On the CPU torch has no allocator statistics (torch.cuda.max_memory_allocated is CUDA only) and tracemalloc
does not see tensor storage, but the profiler's memory events do; with one thread they come in one order,
so the figure is deterministic. The reading uses the profiler's Kineto results, which torch does not
document: a torch without them raises rather than returning a wrong number.
"""

from __future__ import annotations

from collections.abc import Callable

from torch.profiler import ProfilerActivity, profile


def peak_bytes(fn: Callable[[], object]) -> int:
    """Bytes allocated at the peak of ``fn()`` above what was allocated when it started (tensor storage)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    results = getattr(prof.profiler, "kineto_results", None)
    if results is None:
        raise RuntimeError("this torch's profiler has no Kineto results to read memory events from")
    events = sorted((e.start_ns(), e.nbytes()) for e in results.events() if e.name() == "[memory]")
    level = peak = 0
    for _, nbytes in events:
        level += nbytes
        peak = max(peak, level)
    return peak
