"""A shared tracking server (mlflow/server.sh) over SQLite and PostgreSQL receives runs from another process,
`mlflow run mlflow -e gradvar` works from the repo root, and `vaezoo bench main` says its phases and ends with
the report. All slow: each starts servers or runs whole jobs."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import free_port, wait_http

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **extra}


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextlib.contextmanager
def _postgres(tmp: Path):
    """A throw-away PostgreSQL on 127.0.0.1 (free port, temp data dir), stopped by its PID; yields its URI."""
    pg = _pg_bin()
    if pg is None:
        pytest.skip("PostgreSQL not installed (apt-get install postgresql)")
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        run_as = ["runuser", "-u", "postgres", "--"]
    # its own folder under the system temp dir: pytest's base folder is private to root, which the postgres
    # user cannot enter
    home = Path(tempfile.mkdtemp(prefix="vaezoo-pg-"))
    os.chmod(home, 0o755)
    data = home / "pgdata"
    data.mkdir()
    if run_as:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    subprocess.run([*run_as, str(pg / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust"], check=True,
                   capture_output=True, timeout=120)
    server = subprocess.Popen([*run_as, str(pg / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
                               "-k", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(120):
            if subprocess.run([str(pg / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True).returncode == 0:
                break
            assert server.poll() is None, "postgres exited"
            time.sleep(0.5)
        subprocess.run([str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"], check=True,
                       capture_output=True, timeout=60)
        yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"  # SQLAlchemy 2.1 defaults to psycopg 3
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def _server(store: str, tmp: Path):
    port = free_port()
    proc = subprocess.Popen(["bash", str(REPO / "mlflow" / "server.sh"), "--port", str(port), "--store", store,
                             "--artifacts", "art"], cwd=tmp, env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "w"))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc, tmp / "server.log")
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited on its own (the assertion above)
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_second_shells_server_receives_runs(backend, tmp_path):
    from mlflow.tracking import MlflowClient

    with contextlib.ExitStack() as stack:
        store = stack.enter_context(_postgres(tmp_path)) if backend == "postgresql" else "store"  # relative: caller's folder
        url = stack.enter_context(_server(store, tmp_path))
        if backend == "sqlite":
            assert (tmp_path / "store" / "mlflow.db").is_file()  # taken from the caller's folder, not the repo root
        work = tmp_path / "client"
        work.mkdir()
        r = subprocess.run([str(BIN / "vaezoo"), "train", "--dataset", "digits", "--steps", "20", "--batch-size", "32",
                            "--eval-every", "20", "--checkpoint-every", "20", "--latent-dim", "4", "--run-dir", "r",
                            "--no-progress"], cwd=work, env=_env(MLFLOW_TRACKING_URI=url), capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        run_id = json.loads((work / "r" / "run.json").read_text())["mlflow_run_id"]
        client = MlflowClient(url)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and "test_elbo" in run.data.metrics
        assert run.info.run_name.startswith("vae-digits-elbo-reparam-z4-20st-")
        assert {"samples.png", "final.json"} <= {a.path for a in client.list_artifacts(run_id)}
        assert not (work / "mlruns").exists()  # nothing went to a local store
        assert list((tmp_path / "art").rglob("samples.png"))  # the artifacts went through the server


def test_mlflow_run_gradvar_entry_point_from_the_repo_root(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "gv"
    r = subprocess.run([str(BIN / "mlflow"), "run", "mlflow", "-e", "gradvar", "--env-manager", "local",
                        "--experiment-name", "vaezoo", "-P", "dataset=digits", "-P", "batch_sizes=1,4",
                        "-P", "ks=1,2", "-P", "draws=8", "-P", "pool=64", "-P", "bootstrap=10", "-P", f"out={out}"],
                       cwd=REPO, env=_env(MLFLOW_TRACKING_URI=uri, VAEZOO_MLRUNS=str(tmp_path / "unused")),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "summary.json").is_file() or list(out.glob("*.json"))
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("vaezoo")
    runs = client.search_runs([exp.experiment_id])
    study = [x for x in runs if x.data.tags.get("vaezoo.kind") == "gradvar"]
    assert len(study) == 1 and study[0].info.run_name.startswith("gradvar-vae-digits-init-")
    project = [x for x in runs if x.info.run_id == study[0].data.tags["mlflow.parentRunId"]]
    assert project and project[0].data.tags.get("mlflow.project.entryPoint") == "gradvar"


def test_make_bench_job_says_its_phases_and_ends_with_the_report(tmp_path):
    r = subprocess.run([str(BIN / "vaezoo"), "bench", "main", "--steps", "40", "--is-samples", "20"], cwd=tmp_path,
                       env=_env(VAEZOO_MLRUNS=str(tmp_path / "mlruns")), capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    phases = [line for line in r.stderr.splitlines() if line.startswith("[")]
    assert [p[:5] for p in phases] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert all("roughly" in p or "progress bar" in p or "few seconds" in p for p in phases)
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("report ")
    report = Path(last.split()[-1])
    report = report if report.is_absolute() else tmp_path / report
    assert report.is_file() and "gradvar-vae-mnist5k-run-" in report.read_text()
