"""A study's jobs on a Ray cluster (``vaezoo study NAME --ray ADDRESS``): one single-CPU Ray task per job, their
numbers gathered in the jobs' order. Ray is an optional extra: ``pip install 'vaezoo[ray]'``.

A task gets the job's inputs only (the picklable ``Job`` and ``JobContext``) and runs what a worker process runs
(single-threaded torch, seeded from the job's seed), so the numbers equal a ``--workers 0`` run's. It writes its
run folder to ``ctx.runs_dir``: on a cluster of several machines that folder (and a file-based tracking store)
must be on a filesystem every node mounts at the same path, and every node needs the same vaezoo installed.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType

from vaezoo.core.errors import VaezooError

REACH_TIMEOUT_S = 10  # ray.init retries an unreachable address for minutes; a plain TCP connect answers in seconds
INSTALL = "pip install 'vaezoo[ray]'"


def check_reachable(address: str) -> None:
    """Refuse a ``host:port`` (or ``ray://host:port``) nothing listens on; ``auto`` and ``local`` are Ray's to resolve."""
    m = re.fullmatch(r"(?:ray://)?\[?([^\[\]]+?)\]?:(\d+)", address)
    if m is None:
        return
    try:
        socket.create_connection((m[1], int(m[2])), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise VaezooError(f"cannot reach a Ray cluster at '{address}': {exc.strerror or exc}") from None


def connect(address: str) -> ModuleType:
    """The ``ray`` module, connected to the cluster at ``address`` (as ``ray.init`` takes it: ``host:port``,
    ``ray://host:port``, ``auto``); a missing install or an unreachable cluster is a VaezooError."""
    try:
        import ray
    except ImportError:
        raise VaezooError(f"--ray needs Ray, an optional extra: {INSTALL}") from None
    check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.ERROR)
    except Exception as exc:  # ConnectionError, ValueError, RuntimeError: Ray's type depends on what went wrong
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise VaezooError(f"cannot connect to a Ray cluster at '{address}': {reason}") from None
    return ray


@contextmanager
def connected(address: str | None) -> Iterator[ModuleType | None]:
    """``connect(address)`` for the block, disconnected after it; None (and nothing done) when address is None."""
    if address is None:
        yield None
        return
    ray = connect(address)
    try:
        yield ray
    finally:
        ray.shutdown()


def gather(ray: ModuleType, fn: Callable, calls: list[tuple]) -> list:
    """``fn(*args)`` for each ``args`` in ``calls`` as one-CPU Ray tasks; the results in the order of ``calls``.
    A failed task is not retried (its run folder would be half written) and its own error is raised, as a worker
    process's would be."""
    task = ray.remote(num_cpus=1, max_retries=0)(fn)
    try:
        return ray.get([task.remote(*args) for args in calls])
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, Exception):
            raise exc.cause from None
        raise
