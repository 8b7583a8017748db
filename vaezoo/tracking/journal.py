"""A run folder's metrics journal (``metrics.jsonl``) and the record of how much of it MLflow holds.

``metrics.jsonl`` is the source of truth: one JSON line per log or eval event, written and flushed to disk
before anything is sent, each line carrying its ``step`` and ``timestamp`` (ms since the epoch) beside its
metrics. MLflow is a replica of it. ``mlflow-sync.json`` (written atomically) records the replica:

  run_id, uri   the MLflow run and store the folder replicates to (null: none yet, e.g. a --no-track run)
  confirmed     lines MLflow has confirmed: what is still to send starts there
  sent          lines MLflow may hold (>= confirmed): raised before each send, so a process killed between
                a send and its confirmation still knows MLflow may have them
  owner         the process training the run (host, pid, start time); null once it has ended
  status        a terminal status MLflow has not yet taken (the server was away when the run ended)
  artifacts     [[path, subdir], ...] artifacts MLflow has not yet taken

MLflow stores a metric point once per (key, value, timestamp, step), so re-sending a line whose confirmation
was lost adds nothing. On resume, the lines MLflow may hold are kept, and training does not write those
steps again (their re-computed timing would differ, and MLflow cannot delete a point).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vaezoo.core.configs import save_json
from vaezoo.core.io import atomic_write_text

METRICS_FILE = "metrics.jsonl"
STATE_FILE = "mlflow-sync.json"
META_KEYS = ("step", "timestamp")  # every other key of a line is a metric


def now_ms() -> int:
    return int(time.time() * 1000)


def read_lines(path: str | Path) -> list[dict]:
    """The complete lines of a journal (a line still being written, without its newline, is left out)."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line]


@dataclass
class SyncState:
    run_id: str | None = None
    uri: str | None = None
    confirmed: int = 0
    sent: int = 0
    owner: dict | None = None
    status: str | None = None
    artifacts: list = field(default_factory=list)

    @classmethod
    def load(cls, folder: str | Path) -> SyncState:
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def save(self, folder: str | Path) -> None:
        save_json(Path(folder) / STATE_FILE, asdict(self))


def replicated_step(folder: str | Path) -> int:
    """The last step MLflow may hold a line of (0: none). A resumed run keeps every line up to it."""
    state = SyncState.load(folder)
    lines = read_lines(Path(folder) / METRICS_FILE)[: state.sent]
    return int(lines[-1]["step"]) if lines else 0


def rewind(path: str | Path, resume_step: int) -> int:
    """On resume: drop the lines written after the checkpoint at ``resume_step`` (training writes them
    again), except those MLflow may already hold. Returns the last step kept: training skips steps up to it."""
    path = Path(path)
    keep_through = max(resume_step, replicated_step(path.parent))
    if path.is_file():
        keep = [line for line in read_lines(path) if line["step"] <= keep_through]
        atomic_write_text(path, "".join(json.dumps(line) + "\n" for line in keep))
    return keep_through


class MetricsLog:
    """The journal as training writes it: one line per event, flushed at once, so a line is on disk before
    it is sent anywhere. Steps up to ``skip_through`` are not written (a resumed run keeps those lines)."""

    def __init__(self, path: str | Path, skip_through: int = 0) -> None:
        self.path = Path(path)
        self.skip_through = skip_through
        self._fh = open(self.path, "a")

    def write(self, step: int, row: dict) -> bool:
        """Append one event; False when it is a step the journal already holds."""
        if step <= self.skip_through:
            return False
        self._fh.write(json.dumps({"step": step, "timestamp": now_ms(), **row}) + "\n")
        self._fh.flush()
        return True

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
