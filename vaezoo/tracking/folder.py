"""A training run's tracker: its run folder's ``metrics.jsonl`` is the source of truth and MLflow a replica,
kept in step from a background thread (``vaezoo.tracking.journal``, ``vaezoo.tracking.sync``)."""

from __future__ import annotations

import os
from pathlib import Path

from vaezoo.core.errors import VaezooError
from vaezoo.core.io import make_dir
from vaezoo.tracking.runs import EXPERIMENT, MlflowTracker, NullTracker, tracking_uri


class FolderTracker(MlflowTracker):
    """A training run's tracker: its run folder's ``metrics.jsonl`` is the source of truth and the MLflow run
    a replica of it (``vaezoo.tracking.journal``), sent from a background thread (``vaezoo.tracking.sync``).
    A server that goes away costs one warning, never the training; ``vaezoo sync RUN`` finishes the job.

    Offline (``client`` None) when the server was unreachable at start and the user chose
    ``--tracking-fallback local``: the folder holds everything, and ``vaezoo sync`` makes the run later."""

    def __init__(self, folder: str | Path, run_name: str, params: dict, tags: dict, uri: str,
                 fallback: str | None = None) -> None:
        from vaezoo.tracking.journal import SyncState
        from vaezoo.tracking.liveness import Owner
        from vaezoo.tracking.store import Unreachable
        from vaezoo.tracking.sync import Replica, create_run, is_active, warn

        self.folder = Path(folder)
        self.uri = uri
        self.run_id = None
        self.client = None
        state = SyncState.load(self.folder)
        check_owner(self.folder, state)
        try:
            super().__init__(uri, run_name, run_id=None, experiment=EXPERIMENT, create=False)
        except Unreachable as exc:
            if fallback != "local":
                raise _refusal(exc) from None
            warn(f"{exc.what}: logging to '{self.folder}' only; "
                 f"`vaezoo sync {self.folder}` sends the run when the server answers")
        if self.client is not None:
            if state.run_id and state.uri == uri and is_active(self.client, state.run_id):
                self.run_id = state.run_id  # a resumed run goes on in its own MLflow run
                self.client.update_run(self.run_id, status="RUNNING")
            else:  # a new run, or a resumed --no-track / offline / other-store run: its params and all its lines
                self.run_id = create_run(self.client, self.exp_id, self.folder, run_name, params, tags)
                state.confirmed = state.sent = 0
            state.run_id = self.run_id
        make_dir(self.folder, "run directory")  # only now: a store that fails leaves no empty folder
        state.uri = uri
        state.owner = Owner.current().to_dict()
        state.status = None
        state.save(self.folder)
        self.replica = Replica(self.folder, state, self.client)
        if self.client is not None:
            self.replica.start()

    def log_params(self, params: dict) -> None:
        if self.client is not None:
            super().log_params(params)

    def set_tags(self, tags: dict) -> None:
        if self.client is not None:
            super().set_tags(tags)

    def log_metrics(self, metrics: dict, step: int) -> None:
        """Nothing to do: the line is in metrics.jsonl, and the background thread sends it from there."""

    def flush(self) -> None:
        """Nothing to wait for: lines reach MLflow from the background thread (``vaezoo.tracking.sync``)."""

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        if self.client is not None and self.replica.online:
            try:
                super().log_artifact(path, subdir)
                return
            except Exception:  # the server went away: the artifact waits for the next push or `vaezoo sync`
                pass
        self.replica.add_artifact(path, subdir)

    def end(self, status: str = "FINISHED") -> None:
        if self.client is None:  # offline from the start: `vaezoo sync` makes the run and ends it
            self.replica.state.status, self.replica.state.owner = status, None
            self.replica.state.save(self.folder)
            return
        self.replica.finish(status)


def check_owner(folder: str | Path, state=None) -> None:
    """Refuse a run folder that a live process is training (its owner in mlflow-sync.json)."""
    from vaezoo.tracking.journal import SyncState
    from vaezoo.tracking.liveness import Owner

    state = state or SyncState.load(Path(folder))
    if state.owner:
        owner = Owner.from_dict(state.owner)
        if owner.alive():
            raise VaezooError(f"'{folder}' is being trained by {owner}; wait for it or stop it first")


class DeferredTracker:
    """A training run's tracker made in a background thread, while training starts: MLflow's import and its
    store take seconds (about 5 s for a SQLite store on a 2-core machine), and training needs none of it before
    its end, since metrics.jsonl holds every line and the replica sends them from there. ``make`` builds the
    tracker (and does what needs it: tags, run.json, datasets); every call but ``log_metrics``/``flush`` (no-ops
    for a FolderTracker) waits for it. A tracker that fails to start costs one warning: the run is logged to its
    folder only and ``vaezoo sync RUN`` sends it later, as when a server goes away mid-run. The thread runs in a
    copy of the caller's context (a parent run set by ``vaezoo.tracking.ui.parent_run`` holds there too)."""

    def __init__(self, make, folder: str | Path) -> None:
        import contextvars
        import threading

        self._tracker = None
        self._folder = folder
        ctx = contextvars.copy_context()
        self._thread = threading.Thread(target=ctx.run, args=(self._start, make), daemon=True, name="vaezoo-tracker")
        self._thread.start()

    def _start(self, make) -> None:
        try:
            self._tracker = make()
        except Exception as exc:  # noqa: BLE001 -- any failure: training goes on, the folder keeps everything
            from vaezoo.tracking.sync import warn

            warn(f"tracking did not start ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): logging to "
                 f"'{self._folder}' only; `vaezoo sync {self._folder}` sends the run when the store answers")
            self._tracker = NullTracker()

    def ready(self):
        """The tracker, once made."""
        self._thread.join()
        return self._tracker

    def log_metrics(self, metrics: dict, step: int) -> None:
        """Nothing to do: the line is in metrics.jsonl."""

    def flush(self) -> None:
        """Nothing to wait for (lines reach MLflow from the replica's thread)."""

    def __getattr__(self, name: str):
        return getattr(self.ready(), name)


def _refusal(exc: Exception) -> VaezooError:
    return VaezooError(f"{exc}, or --tracking-fallback local (log to the run folder, `vaezoo sync` later)")


def refuse_unreachable(uri: str | None, fallback: str | None = None) -> None:
    """Before any work (data, model): an unreachable http(s) server, given or in $MLFLOW_TRACKING_URI, is one
    error, unless the fallback is local. The tracker probes again when it starts."""
    from vaezoo.tracking.store import Unreachable, probe

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri and fallback != "local":
        try:
            probe(uri)
        except Unreachable as exc:
            raise _refusal(exc) from None


def start_training(enabled: bool, folder: str | Path, run_name: str, params: dict, tags: dict,
                   uri: str | None = None, fallback: str | None = None):
    """A training run's tracker (``FolderTracker``), or one that does nothing when tracking is off."""
    if not enabled:
        return NullTracker()
    return FolderTracker(folder, run_name, params, tags, tracking_uri(uri), fallback)
