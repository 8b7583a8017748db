"""Opening a tracking store: an unreachable server is one clear error within seconds, and a fresh SQLite
store is safe when several processes open it at once.

MLflow's HTTP client retries a failed request 7 times with doubling waits and a 120 s timeout (minutes
before it gives up), and two processes creating a SQLite store's tables at once race ("table ... already
exists"). So: a TCP probe with a short timeout before MLflow's client is used, shorter retries for the
rest of the run (unless the user set MLflow's own variables), and a file lock around creating the store
and the experiment.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from vaezoo.core.errors import VaezooError

PROBE_TIMEOUT_S = 3.0
# MLflow reads these at each request; a user's own values win (setdefault)
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
LOCK_TIMEOUT_S = 600.0  # creating the tables takes seconds; a loaded machine can take much longer


class Unreachable(VaezooError):
    """The tracking server does not answer; ``what`` says so without advice (each caller adds its own)."""

    def __init__(self, uri: str, reason: str) -> None:
        self.what = f"MLflow tracking server {uri} is unreachable ({reason})"
        super().__init__(f"{self.what}: start it, or pass another --tracking-uri, or --no-track")


def is_http(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def probe(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise ``Unreachable`` unless something accepts a TCP connection at an http(s) URI's host and port
    (other URIs, e.g. sqlite or a database, are not probed)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "localhost", port), timeout=timeout):
            pass
    except OSError as exc:
        raise Unreachable(uri, exc.strerror or str(exc)) from None


def quick_retries(uri: str) -> None:
    """Shorter HTTP retries for this process (a dead server costs seconds, not minutes)."""
    if is_http(uri):
        for name, value in HTTP_RETRY_DEFAULTS.items():
            os.environ.setdefault(name, value)


@contextlib.contextmanager
def creation_lock(uri: str):
    """A file lock beside a SQLite store while it is opened (tables created) and its experiment made."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock, Timeout

    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(db) + ".lock", timeout=LOCK_TIMEOUT_S):
            yield
    except Timeout:
        raise VaezooError(f"the MLflow store '{db}' stayed locked for {LOCK_TIMEOUT_S:.0f} s") from None


def connect(uri: str, registry: bool = False):
    """An MlflowClient for ``uri``, after the probe, under the creation lock (opening creates the tables)."""
    probe(uri)  # before importing mlflow: an unreachable server fails in the time of the probe
    quick_retries(uri)
    from mlflow.tracking import MlflowClient

    with creation_lock(uri):
        return MlflowClient(tracking_uri=uri, registry_uri=uri if registry else None)


def open_store(uri: str, experiment: str):
    """(MlflowClient, experiment id) for ``uri``; the experiment is made if missing."""
    client = connect(uri)
    from mlflow.exceptions import MlflowException

    with creation_lock(uri):
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            return client, exp.experiment_id
        loc = None
        if uri.startswith("sqlite:///") and not os.environ.get("MLFLOW_TRACKING_URI"):
            loc = (Path(uri[len("sqlite:///") :]).parent / "artifacts").as_uri()
        try:
            return client, client.create_experiment(experiment, artifact_location=loc)
        except MlflowException as exc:  # another process (of a shared server) made it first
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise exc from None
            return client, exp.experiment_id
