"""Keeping MLflow in step with a run folder's journal: the background sender of a live run, and
``vaezoo sync RUN`` for a run whose process is gone (killed, or its server was away).

What is sent, and how a re-send adds nothing, is described in ``vaezoo.tracking.journal``.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from vaezoo.core.configs import read_json_object, save_json
from vaezoo.core.errors import VaezooError
from vaezoo.tracking.journal import META_KEYS, METRICS_FILE, SyncState, read_lines
from vaezoo.tracking.liveness import Owner

SEND_EVERY_S = 5.0  # a live run's lines reach MLflow within this long (and each retry after an outage)
BATCH = 1000  # MLflow's limit of metrics per log_batch


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def metrics_of(lines: list[dict]) -> list:
    """MLflow metric points of journal lines, each with its line's own step and timestamp."""
    from mlflow.entities import Metric

    out = []
    for line in lines:
        # lines written before lines carried a timestamp get 0: fixed, so a re-send still adds nothing
        ts, step = int(line.get("timestamp", 0)), int(line["step"])
        out += [Metric(k, float(v), ts, step) for k, v in line.items()
                if k not in META_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)]
    return out


def send(client, run_id: str, lines: list[dict]) -> None:
    metrics = metrics_of(lines)
    for i in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + BATCH])


def _artifact_entry(folder: Path, path: str | Path, subdir: str | None) -> list:
    path = Path(path).resolve()
    try:  # relative to the folder when inside it, so a moved folder still finds its files
        path = path.relative_to(folder.resolve())
    except ValueError:
        pass
    return [str(path), subdir]


class Replica:
    """MLflow's copy of one run folder's journal. ``push()`` sends what MLflow has not confirmed; the
    background thread pushes every ``SEND_EVERY_S`` seconds, so training never waits on the server. A failed
    push prints one warning and leaves the lines in the journal; a later push (or ``vaezoo sync``) sends them."""

    def __init__(self, folder: str | Path, state: SyncState, client) -> None:
        self.folder = Path(folder)
        self.state = state
        self.client = client
        self.online = True
        self._lock = threading.Lock()  # one push at a time (the thread, or the owner's final push)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="vaezoo-mlflow-sync", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(SEND_EVERY_S):
            self.push()

    def push(self) -> bool:
        """Send unconfirmed lines and pending artifacts; True when MLflow holds everything."""
        with self._lock:
            try:
                self.send_pending()
            except Exception as exc:  # any failure of the server or the network: keep training
                if self.online:
                    warn(f"MLflow at {self.state.uri} did not answer ({type(exc).__name__}: {str(exc)[:200]}); "
                         f"training goes on, the metrics stay in '{self.folder / METRICS_FILE}' and are sent when it "
                         f"answers again, or by `vaezoo sync {self.folder}`")
                self.online = False
                return False
            if not self.online:  # news, not a second warning
                print(f"note: MLflow at {self.state.uri} answers again: '{self.folder}' is in step with it",
                      file=sys.stderr, flush=True)
            self.online = True
            return True

    def send_pending(self) -> None:
        """Send what MLflow has not confirmed (lines, then artifacts); raises what the client raises."""
        st = self.state
        lines = read_lines(self.folder / METRICS_FILE)
        if len(lines) > st.confirmed:
            if st.sent < len(lines):  # said before sending: a kill mid-send still knows MLflow may hold them
                st.sent = len(lines)
                st.save(self.folder)
            send(self.client, st.run_id, lines[st.confirmed :])
            st.confirmed = len(lines)
            st.save(self.folder)
        while st.artifacts:
            path, subdir = st.artifacts[0]
            self.client.log_artifact(st.run_id, str(self.folder / path), subdir)
            st.artifacts.pop(0)
            st.save(self.folder)

    def add_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        with self._lock:
            self.state.artifacts.append(_artifact_entry(self.folder, path, subdir))
            self.state.save(self.folder)

    def finish(self, status: str) -> None:
        """Stop the thread, push the rest, and end the MLflow run (or leave the status for `vaezoo sync`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        st = self.state
        st.status, st.owner = status, None
        st.save(self.folder)
        if self.push():
            try:
                self.client.set_terminated(st.run_id, status=status)
                st.status = None
            except Exception:  # the status waits in the state file for `vaezoo sync`
                pass
        st.save(self.folder)


def create_run(client, exp_id: str, folder: Path, name: str, params: dict, tags: dict) -> str:
    """A new MLflow run for a run folder, with its params and tags (nothing sent of the journal yet)."""
    from vaezoo.tracking.runs import log_params, set_tags

    run_id = client.create_run(exp_id, run_name=name).info.run_id
    log_params(client, run_id, params)
    set_tags(client, run_id, {**tags, "run_dir": str(folder.resolve())})
    return run_id


def _record_run(folder: Path, run_id: str, uri: str) -> None:
    """run.json names the MLflow run (eval and publish read it there)."""
    path = folder / "run.json"
    run = read_json_object(path, "run record") if path.is_file() else {}
    if run.get("mlflow_run_id") != run_id or run.get("tracking_uri") != uri:
        save_json(path, {**run, "mlflow_run_id": run_id, "tracking_uri": uri})


def sync_run(folder: str | Path, uri: str | None = None, force: bool = False) -> dict:
    """Bring MLflow in step with a run folder whose process has ended: the run is made if it has none in the
    store (a --no-track run, or a run started with --tracking-fallback local), unconfirmed lines and artifacts
    are sent, and a run left RUNNING gets its end: FINISHED when final.json exists, else KILLED."""
    from vaezoo.tracking import ui
    from vaezoo.tracking.runs import EXPERIMENT, tracking_uri, training_params
    from vaezoo.tracking.store import Unreachable, open_store

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise VaezooError(f"'{folder}' is not a vaezoo run directory (no config.json)")
    state = SyncState.load(folder)
    if state.owner:
        owner = Owner.from_dict(state.owner)
        alive = owner.alive()
        if alive:
            return {"live": True, "owner": str(owner), "run_id": state.run_id}
        if alive is None and not force:
            raise VaezooError(f"'{folder}' is owned by {owner}, which cannot be checked from here; "
                              "pass --force if that process is gone")
    run = read_json_object(folder / "run.json", "run record") if (folder / "run.json").is_file() else {}
    uri = tracking_uri(uri or state.uri or run.get("tracking_uri"))
    try:
        client, exp_id = open_store(uri, EXPERIMENT)
    except Unreachable as exc:
        raise VaezooError(f"{exc.what}; nothing is lost: sync again when it answers, or pass another "
                          "--tracking-uri") from None
    created = False
    if state.run_id is None or state.uri != uri or not is_active(client, state.run_id):
        record = read_json_object(folder / "config.json", "run config")
        params = training_params(record["config"], record["config_hash"])
        name = ui.run_name(record["config"], record["config_hash"])
        state.run_id = create_run(client, exp_id, folder, name, params, run.get("tags", {}))
        state.uri, state.confirmed, state.sent, created = uri, 0, 0, True
        ui.present(_Handle(client, state.run_id), name, "train", run.get("tags", {}).get("git_sha", "unknown"),
                   entry="vaezoo train")
        state.save(folder)
        _record_run(folder, state.run_id, uri)
    before = state.confirmed
    try:
        Replica(folder, state, client).send_pending()
    except Exception as exc:  # the server went away meanwhile: what it took is recorded, the rest waits
        raise VaezooError(f"MLflow at {uri} stopped answering ({type(exc).__name__}); nothing is lost: "
                          "sync again when it answers") from None
    status = state.status
    if status is None and (created or client.get_run(state.run_id).info.status == "RUNNING"):
        status = "FINISHED" if (folder / "final.json").is_file() else "KILLED"
    if status is not None:
        client.set_terminated(state.run_id, status=status)
    state.status, state.owner = None, None
    state.save(folder)
    return {"live": False, "run_id": state.run_id, "uri": uri, "created": created,
            "lines_sent": state.confirmed - before, "lines": state.confirmed, "status": status}


class _Handle:
    """What ``vaezoo.tracking.ui`` needs of a tracker: a client, a run id, set_tags."""

    def __init__(self, client, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def set_tags(self, tags: dict) -> None:
        from vaezoo.tracking.runs import set_tags

        set_tags(self.client, self.run_id, tags)


def is_active(client, run_id: str) -> bool:
    """The run exists in the store and is not deleted."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException:
        return False


def touch(folder: str | Path) -> None:
    """What any command that reads a run folder does first (best effort): a dead owner's run is synced and
    marked KILLED, not left RUNNING. Never fails the command."""
    folder = Path(folder)
    state = SyncState.load(folder)
    if state.run_id is None or not (state.owner or state.status or state.artifacts
                                    or len(read_lines(folder / METRICS_FILE)) > state.confirmed):
        return
    try:
        sync_run(folder)
    except Exception as exc:  # a server that is away now: the next touch or sync tries again
        warn(f"could not sync '{folder}' with MLflow ({str(exc)[:200]}); `vaezoo sync {folder}` tries again")


__all__ = ["Replica", "sync_run", "touch", "send", "metrics_of", "create_run"]
