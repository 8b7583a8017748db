"""Which process owns a run, and whether it is still alive: a run whose process is gone (killed, crashed,
the machine rebooted) is marked KILLED in MLflow by the next command that touches it, not left RUNNING.

The owner is (host, pid, the process's start time): the start time tells a live process apart from a new
one that was given the same pid later.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass


def _start_time(pid: int) -> float | None:
    """When process ``pid`` started (None: no such live process, or psutil is missing)."""
    try:
        import psutil
    except ImportError:  # tracking installs psutil; without it the pid alone decides
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped by its parent: gone
            return None
        return round(proc.create_time(), 2)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    started: float | None

    @classmethod
    def current(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), _start_time(os.getpid()))

    @classmethod
    def from_dict(cls, d: dict) -> Owner:
        return cls(str(d["host"]), int(d["pid"]), d.get("started"))

    def to_dict(self) -> dict:
        return asdict(self)

    def alive(self) -> bool | None:
        """True or False on this host; None for another host (it cannot be checked from here)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by another user
            pass
        if self.started is None:
            return True
        return _start_time(self.pid) == self.started

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"
