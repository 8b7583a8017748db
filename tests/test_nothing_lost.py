"""Nothing lost (issue 11): metrics.jsonl is the source of truth and MLflow a replica of it. A run killed at
fixed points, then resumed, evaluated or synced, ends with MLflow's metric histories equal to the journal;
a killed run is marked KILLED; a fresh store takes three concurrent first runs; an unreachable server is one
error line (or, by choice, a warning and a later sync); a server stopped mid-run and restarted loses nothing.

Kills happen from inside the child at a fixed point (a patched function), never by polling, so where a child
dies does not depend on the machine's speed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import free_port, wait_http

from vaezoo.tracking.journal import METRICS_FILE, STATE_FILE, SyncState, read_lines, rewind
from vaezoo.tracking.liveness import Owner

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# 60 steps: log lines every 10, evals and checkpoints every 20 (a line beyond a checkpoint exists at 30 and 50)
TRAIN = ["train", "--dataset", "digits", "--steps", "60", "--batch-size", "32", "--eval-every", "20",
         "--checkpoint-every", "20", "--latent-dim", "4", "--set", "log_every=10", "--set", "eval_k=4",
         "--set", "model.hidden=[32]", "--no-progress"]


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **extra}


def vaezoo(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "vaezoo"), *args], cwd=cwd, env=env or _env(), capture_output=True, text=True,
                          timeout=timeout)


def _child(argv: list[str], patch: str, cwd: Path, env: dict | None = None, stderr=subprocess.PIPE) -> subprocess.Popen:
    """`vaezoo ARGV` in a child Python that first runs ``patch`` (which arranges its own SIGKILL or pauses)."""
    code = f"import os, signal, sys\n{patch}\nfrom vaezoo.cli import main\nsys.exit(main({argv!r}))\n"
    return subprocess.Popen([sys.executable, "-c", code], cwd=cwd, env=env or _env(), stdout=subprocess.DEVNULL,
                            stderr=stderr, text=True)


def assert_mlflow_equals_journal(client, run: Path) -> str:
    """Every metric's MLflow history is the journal's (step, timestamp, value) list, no more, no fewer."""
    run_id = SyncState.load(run).run_id
    lines = read_lines(run / METRICS_FILE)
    want: dict[str, list] = {}
    for line in lines:
        for k, v in line.items():
            if k not in ("step", "timestamp"):
                want.setdefault(k, []).append((line["step"], line["timestamp"], v))
    assert want, "the journal is empty"
    got = {k: sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, k)) for k in want}
    assert got == {k: sorted(v) for k, v in want.items()}
    assert set(client.get_run(run_id).data.metrics) == set(want)
    return run_id


# ---------------------------------------------------------------- in-process: the journal and its replica


def _lines(steps):
    return [{"step": s, "timestamp": 1000 + s, "train_bound": -float(s)} for s in steps]


def _write_journal(folder: Path, lines: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / METRICS_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_read_lines_leaves_out_a_line_still_being_written(tmp_path):
    _write_journal(tmp_path, _lines([10, 20]))
    with open(tmp_path / METRICS_FILE, "a") as fh:
        fh.write('{"step": 30, "timest')
    assert [line["step"] for line in read_lines(tmp_path / METRICS_FILE)] == [10, 20]


def test_rewind_keeps_the_lines_mlflow_may_hold(tmp_path):
    _write_journal(tmp_path, _lines([10, 20, 30, 40, 50]))
    SyncState(run_id="x", uri="u", confirmed=2, sent=4).save(tmp_path)  # MLflow may hold steps up to 40
    assert rewind(tmp_path / METRICS_FILE, 20) == 40
    assert [line["step"] for line in read_lines(tmp_path / METRICS_FILE)] == [10, 20, 30, 40]
    SyncState().save(tmp_path)  # MLflow holds nothing: back to the checkpoint
    assert rewind(tmp_path / METRICS_FILE, 20) == 20
    assert [line["step"] for line in read_lines(tmp_path / METRICS_FILE)] == [10, 20]


def test_a_resend_after_a_lost_confirmation_adds_nothing(tmp_path):
    from vaezoo.tracking.store import open_store
    from vaezoo.tracking.sync import Replica

    client, exp = open_store(f"sqlite:///{tmp_path / 'mlflow.db'}", "vaezoo")
    run_id = client.create_run(exp).info.run_id
    _write_journal(tmp_path / "r", _lines([10, 20, 30]))
    state = SyncState(run_id=run_id, uri="u")
    assert Replica(tmp_path / "r", state, client).push()
    assert (state.confirmed, state.sent) == (3, 3)
    state.confirmed = 1  # as if killed after MLflow took the batch but before the watermark was written
    assert Replica(tmp_path / "r", state, client).push()
    history = client.get_metric_history(run_id, "train_bound")
    assert sorted((m.step, m.timestamp, m.value) for m in history) == [(10, 1010, -10.0), (20, 1020, -20.0),
                                                                      (30, 1030, -30.0)]


def test_the_owner_is_alive_until_its_process_is_gone():
    me = Owner.current()
    assert me.alive() is True
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid names no process (or, reused, one with another start time)
    assert Owner(me.host, child.pid, me.started).alive() is False
    assert Owner(me.host, me.pid, (me.started or 0) + 1000).alive() is False  # a reused pid is not the owner
    assert Owner("another-host.invalid", me.pid, me.started).alive() is None


def test_resuming_an_untracked_run_with_tracking_makes_its_mlflow_run_with_params_and_metrics(tmp_path):
    from mlflow.tracking import MlflowClient

    from vaezoo.cli import main
    from vaezoo.tracking import tracking_uri

    assert main([*TRAIN, "--steps", "20", "--run-dir", "r", "--no-track"]) == 0
    assert not (tmp_path / "r" / STATE_FILE).exists()
    assert main(["train", "--resume", "r", "--no-progress"]) == 0
    client = MlflowClient(tracking_uri())
    run_id = assert_mlflow_equals_journal(client, tmp_path / "r")
    run = client.get_run(run_id)
    assert run.data.params["model.latent_dim"] == "4" and "config_hash" in run.data.params
    assert run.info.status == "FINISHED" and json.loads((tmp_path / "r" / "run.json").read_text())["mlflow_run_id"] == run_id


# ---------------------------------------------------------------- real processes


def test_an_unreachable_server_is_one_error_line_and_leaves_no_folder(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    r = vaezoo(*TRAIN, "--run-dir", "r", "--tracking-uri", dead, cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: MLflow tracking server") and "unreachable" in lines[0]
    assert not (tmp_path / "r").exists()


def test_sync_says_what_it_cannot_do_in_one_line(tmp_path):
    r = vaezoo("sync", "nowhere", cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "error: 'nowhere' is not a vaezoo run directory (no config.json)"
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text("{}")
    me = Owner.current()
    SyncState(run_id="x", uri="u", owner=me.to_dict()).save(run)  # owned by this (live) test process
    r = vaezoo("sync", "r", cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and f"being trained by pid {me.pid}" in r.stdout
    SyncState(run_id="x", uri="u", owner={**me.to_dict(), "host": "another-host.invalid"}).save(run)
    r = vaezoo("sync", "r", cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--force" in r.stderr
    dead = f"http://127.0.0.1:{free_port()}"
    SyncState(uri=dead).save(run)  # a --tracking-fallback local run whose server is still away
    before = (run / STATE_FILE).read_text()
    r = vaezoo("sync", "r", cwd=tmp_path, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "unreachable" in lines[0] and "nothing is lost" in lines[0]
    assert (run / STATE_FILE).read_text() == before


@pytest.mark.slow
def test_fallback_local_trains_with_one_warning_and_sync_sends_it_later(tmp_path):
    from mlflow.tracking import MlflowClient

    dead = f"http://127.0.0.1:{free_port()}"
    r = vaezoo(*TRAIN, "--run-dir", "r", "--tracking-uri", dead, "--tracking-fallback", "local", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "unreachable" in warnings[0] and "vaezoo sync" in warnings[0]
    store = f"sqlite:///{tmp_path / 'later.db'}"
    s = vaezoo("sync", "r", "--tracking-uri", store, cwd=tmp_path)
    assert s.returncode == 0, s.stderr[-3000:]
    client = MlflowClient(store)
    run_id = assert_mlflow_equals_journal(client, tmp_path / "r")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["objective.bound"] == "elbo"
    assert run.info.run_name.startswith("vae-digits-elbo-reparam-z4-60st-")
    assert vaezoo("sync", "r", "--tracking-uri", store, cwd=tmp_path).returncode == 0  # again: nothing added
    assert_mlflow_equals_journal(client, tmp_path / "r")


KILL_AFTER_CHECKPOINT_20 = """
import vaezoo.training.loop as loop
real = loop.save_checkpoint
def save(path, state):
    real(path, state)
    if state["step"] == 20:
        os.kill(os.getpid(), signal.SIGKILL)
loop.save_checkpoint = save
"""
KILL_MID_SEND = """
import vaezoo.tracking.sync as sync
real = sync.send
def send(client, run_id, lines):
    real(client, run_id, lines)  # MLflow has the lines; the confirmation is never written
    os.kill(os.getpid(), signal.SIGKILL)
sync.send = send
"""
KILL_AFTER_LINE_50 = """
from vaezoo.tracking.journal import MetricsLog
real = MetricsLog.write
def write(self, step, row):
    written = real(self, step, row)
    if step == 50:  # a line beyond the last checkpoint (40)
        os.kill(os.getpid(), signal.SIGKILL)
    return written
MetricsLog.write = write
"""


@pytest.mark.slow
@pytest.mark.parametrize("point, then", [("after-checkpoint-20", "eval+resume"), ("mid-send", "resume"),
                                         ("after-line-50", "sync+resume")])
def test_sigkill_at_a_fixed_point_then_resume_or_sync_leaves_mlflow_equal_to_the_journal(point, then, tmp_path):
    from mlflow.tracking import MlflowClient

    from vaezoo.tracking import tracking_uri

    patch = {"after-checkpoint-20": KILL_AFTER_CHECKPOINT_20, "mid-send": KILL_MID_SEND,
             "after-line-50": KILL_AFTER_LINE_50}[point]
    child = _child([*TRAIN, "--run-dir", "r"], patch, tmp_path)
    _, err = child.communicate(timeout=600)
    assert child.returncode == -signal.SIGKILL, err[-3000:]
    run = tmp_path / "r"
    client = MlflowClient(tracking_uri())
    run_id = SyncState.load(run).run_id
    assert client.get_run(run_id).info.status == "RUNNING"  # nobody has touched it yet
    if then.startswith("eval"):
        r = vaezoo("eval", "r", "--is-samples", "0", "--max-test", "50", "-k", "2", cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        assert client.get_run(run_id).info.status == "KILLED"
        assert_mlflow_equals_journal(client, run)
    if then.startswith("sync"):
        r = vaezoo("sync", "r", cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "marked KILLED" in r.stdout
        assert client.get_run(run_id).info.status == "KILLED"
        assert_mlflow_equals_journal(client, run)
        assert [line["step"] for line in read_lines(run / METRICS_FILE)][-1] == 50
    r = vaezoo("train", "--resume", "r", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert SyncState.load(run).run_id == run_id  # the same MLflow run goes on
    assert client.get_run(run_id).info.status == "FINISHED"
    assert_mlflow_equals_journal(client, run)
    steps = [(line["step"], "test_elbo" in line) for line in read_lines(run / METRICS_FILE)]
    assert steps == [(10, False), (20, False), (20, True), (30, False), (40, False), (40, True), (50, False),
                     (60, False), (60, True)]  # each event once


@pytest.mark.slow
def test_three_concurrent_first_runs_on_a_fresh_store_all_succeed(tmp_path):
    from mlflow.tracking import MlflowClient

    env = _env(VAEZOO_MLRUNS=str(tmp_path / "fresh"))
    procs = [subprocess.Popen([str(BIN / "vaezoo"), *TRAIN, "--steps", "20", "--run-dir", f"r{i}"], cwd=tmp_path,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(3)]
    errs = [p.communicate(timeout=900)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(e[-2000:] for e in errs)
    client = MlflowClient(f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}")
    for i in range(3):
        run_id = assert_mlflow_equals_journal(client, tmp_path / f"r{i}")
        assert client.get_run(run_id).info.status == "FINISHED"


@contextlib.contextmanager
def _server(port: int, tmp: Path):
    """mlflow/server.sh on 127.0.0.1:port over a SQLite store in tmp, stopped by its process group."""
    log = tmp / f"server-{time.monotonic_ns()}.log"
    proc = subprocess.Popen(["bash", str(REPO / "mlflow" / "server.sh"), "--port", str(port), "--store", "store",
                             "--artifacts", "art", "--workers", "1"], cwd=tmp, env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, log)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


PAUSE_AT_30_AND_50 = """
import time
from pathlib import Path
from vaezoo.tracking.journal import MetricsLog
real = MetricsLog.write
def write(self, step, row):
    written = real(self, step, row)
    if step in (30, 50):  # tell the test, then wait for it (it stops or restarts the server meanwhile)
        Path(f"reached-{step}").touch()
        while not Path(f"go-{step}").exists():
            time.sleep(0.1)
    return written
MetricsLog.write = write
import vaezoo.tracking.sync as sync
sync.SEND_EVERY_S = 0.5
"""


@pytest.mark.slow
def test_a_server_stopped_mid_run_and_restarted_loses_nothing(tmp_path):
    from mlflow.tracking import MlflowClient

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    err = tmp_path / "child.err"

    def wait_for(child, name: str | None = None, warning: str | None = None) -> None:
        while not ((tmp_path / name).exists() if name else warning in err.read_text()):
            assert child.poll() is None, err.read_text()[-3000:]
            time.sleep(0.2)

    with contextlib.ExitStack() as stack:
        stack.enter_context(_server(port, tmp_path))
        child = _child([*TRAIN, "--run-dir", "r"], PAUSE_AT_30_AND_50, tmp_path, _env(MLFLOW_TRACKING_URI=url),
                       stderr=open(err, "w"))
        wait_for(child, "reached-30")
        stack.close()  # the server goes away at step 30
        (tmp_path / "go-30").touch()
        wait_for(child, "reached-50")  # steps 31-50 trained with the server away
        wait_for(child, warning="did not answer")  # the sender noticed (it retries every 0.5 s)
        stack.enter_context(_server(port, tmp_path))  # back: same store, same port
        (tmp_path / "go-50").touch()
        assert child.wait(timeout=600) == 0, err.read_text()[-3000:]
        ours = [line for line in err.read_text().splitlines() if line.startswith(("warning:", "note:"))]
        assert [line.split()[0] for line in ours] == ["warning:", "note:"], ours  # one warning, then the news
        assert "did not answer" in ours[0] and "answers again" in ours[1]
        client = MlflowClient(url)
        run_id = assert_mlflow_equals_journal(client, tmp_path / "r")
        assert client.get_run(run_id).info.status == "FINISHED"
        assert "final.json" in {a.path for a in client.list_artifacts(run_id)}


def test_a_tracker_that_cannot_start_costs_one_warning_and_the_folder_keeps_the_run(tmp_path):
    """MLflow starts beside the first steps (tracking.DeferredTracker); a store that cannot be opened (here a SQLite
    file under a folder that cannot exist) must not stop training: one warning, and the run folder holds it all."""
    r = vaezoo("train", "--dataset", "digits", "--steps", "4", "--batch-size", "32", "--eval-every", "4",
               "--checkpoint-every", "4", "--set", "model.hidden=[16]", "--set", "model.latent_dim=2", "--no-progress",
               "--run-dir", "r", "--tracking-uri", "sqlite:////proc/vaezoo-no-such-folder/mlflow.db", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "tracking did not start" in warnings[0] and "vaezoo sync" in warnings[0], r.stderr
    run = tmp_path / "r"
    assert (run / "final.json").is_file() and [ln["step"] for ln in read_lines(run / METRICS_FILE)][-1] == 4
    assert json.loads((run / "run.json").read_text())["mlflow_run_id"] is None
