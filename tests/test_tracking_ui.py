"""MLflow for a team: runs read well in the UI (names, MLflow's source/commit tags, the experiment's kind, datasets,
parent runs), decoders are ONNX models with a signature, `vaezoo report` renders, and the CLI contracts hold."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import free_port, wait_http

from vaezoo.tracking import ui

REPO = Path(__file__).resolve().parent.parent
CFG = {"model": {"hidden": [32], "latent_dim": 4}, "data": {"name": "digits"}, "batch_size": 32, "steps": 20,
       "eval_every": 20, "checkpoint_every": 20, "log_every": 10, "eval_k": 4}
VAEZOO = Path(sys.executable).parent / "vaezoo"  # the console script: CLI contracts go through the real command
SHIPPED = REPO / "vaezoo" / "pretrained" / "mlp-vae.digits.onnx"


def _cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([str(VAEZOO), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_run_names_say_what_ran():
    from vaezoo.training.config import resolve_config

    def name(user):
        cfg = resolve_config(user, (1, 28, 28))
        return ui.run_name(cfg.to_dict(), cfg.hash), cfg.hash

    plain, h = name({})
    assert plain == f"vae-mnist5k-elbo-reparam-z32-2000st-{h[:7]}"
    iwae, h = name({"model": {"name": "iwae"}, "objective": {"bound": "iwae", "k": 5, "estimator": "dreg"}})
    assert iwae == f"iwae-mnist5k-iwae-dreg-k5-z32-2000st-{h[:7]}"
    beta, _ = name({"objective": {"beta": 4.0}, "model": {"backbone": "conv", "latent_dim": 8}, "steps": 300})
    assert beta.startswith("vae-conv-mnist5k-elbo-reparam-beta4-z8-300st-")
    # two runs of one reference config that differ in a setting the name does not spell still differ by hash
    a, _ = name({"optim": {"lr": 1e-3}})
    b, _ = name({"optim": {"lr": 3e-4}})
    assert a != b and a.rsplit("-", 1)[0] == b.rsplit("-", 1)[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One tracked training run (inside a parent run) and its evaluation, in a store of their own."""
    from mlflow.tracking import MlflowClient

    from vaezoo import tracking
    from vaezoo.training.config import resolve_config
    from vaezoo.training.evaluate import evaluate_run
    from vaezoo.training.loop import train

    root = tmp_path_factory.mktemp("ui")
    (root / "mlruns").mkdir()
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    parent = tracking.start(True, "sweep", uri)
    with ui.parent_run(parent.run_id):
        train(resolve_config(CFG, (1, 8, 8)), root / "r", track=True, tracking_uri=uri, progress=False)
        evaluate_run(root / "r", k=4, is_samples=50, track=True, tracking_uri=uri)
    parent.end()
    run_id = json.loads((root / "r" / "run.json").read_text())["mlflow_run_id"]
    return {"root": root, "uri": uri, "client": MlflowClient(uri), "run_id": run_id, "parent": parent.run_id}


def test_a_training_run_reads_well_in_the_ui(store):
    from vaezoo.data import DataConfig, load_dataset
    from vaezoo.tracking.provenance import git_state
    from vaezoo.training.config import resolve_config

    client = store["client"]
    run = client.get_run(store["run_id"])
    cfg = resolve_config(CFG, (1, 8, 8))
    assert run.info.run_name == ui.run_name(cfg.to_dict(), cfg.hash) == run.data.tags["mlflow.runName"]
    assert client.get_experiment(run.info.experiment_id).tags[ui.EXPERIMENT_KIND_TAG] == "custom_model_development"
    tags = run.data.tags
    assert tags["mlflow.source.name"] == "vaezoo train" and tags["vaezoo.kind"] == "train"
    sha = git_state()["git_sha"]
    assert tags.get("mlflow.source.git.commit") == (sha if sha != "unknown" else None)
    assert tags["mlflow.parentRunId"] == store["parent"]
    ds = load_dataset(DataConfig("digits"))
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"digits-train", "digits-test"}
    for split, array in (("train", ds.train.numpy()), ("test", ds.test.numpy())):
        d = inputs[f"digits-{split}"]
        itags = {t.key: t.value for t in d.tags}
        assert d.dataset.digest == ui.array_digest(array)
        assert itags["vaezoo.split_size"] == str(len(array)) and itags["vaezoo.split"] == split
        assert json.loads(d.dataset.profile)["features_shape"] == list(array.shape)
    assert inputs["digits-train"].dataset.digest != inputs["digits-test"].dataset.digest
    evals = client.search_runs([run.info.experiment_id], "tags.`vaezoo.kind` = 'eval'")
    assert [e.info.run_name for e in evals] == [f"eval-{run.info.run_name}"]
    assert evals[0].data.tags["mlflow.parentRunId"] == store["parent"]


def test_report_is_self_contained_and_renders_in_chromium(store, tmp_path):
    out = tmp_path / "rep"
    r = _cli("report", "--experiment", "vaezoo", "--out", str(out), "--tracking-uri", store["uri"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    page = (out / "report.html").read_text()
    name = store["client"].get_run(store["run_id"]).info.run_name
    assert name in page and f"eval-{name}" in page and "test_elbo" in page
    eval_run = store["client"].search_runs([store["client"].get_run(store["run_id"]).info.experiment_id],
                                           "tags.`vaezoo.kind` = 'eval'")[0]
    ll, se = eval_run.data.metrics["ll_is"], eval_run.data.metrics["ll_is_mc_se"]
    assert f"{ll:.4g} ± {se:.4g}" in page  # a number from random draws carries its interval
    # self-contained: every image is inlined, nothing is fetched
    assert page.count("src='data:image/png;base64,") >= 3 and "src='http" not in page and "href=" not in page
    md = (out / "report.md").read_text()
    for ref in [line.split("](", 1)[1][:-1] for line in md.splitlines() if line.startswith("![")]:
        assert (out / ref).is_file()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (apt-get install chromium): the report was not rendered")
    png = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'c'}",
                    f"--screenshot={png}", "--window-size=1280,2000", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    from PIL import Image

    img = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert img.shape == (2000, 1280)
    # the page drew tables and plots: many dark pixels (text, lines), not a blank or an error page
    dark = (img < 128).mean()
    assert 0.01 < dark < 0.5, dark


def test_report_of_an_unknown_experiment_is_one_error_line_and_writes_nothing(store, tmp_path):
    r = _cli("report", "--experiment", "nosuch", "--out", str(tmp_path / "rep"), "--tracking-uri", store["uri"],
             cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: no experiment 'nosuch'") and len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "rep").exists()


def test_a_published_decoder_is_an_onnx_model_with_signature_and_comes_back_hash_checked(tmp_path):
    import onnxruntime as ort
    import yaml

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = _cli("publish", str(SHIPPED), "--name", "digits-decoder", "--alias", "champion", "--tracking-uri", uri, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("published: models:/digits-decoder@champion (version 1")
    r = _cli("pull", "models:/digits-decoder@champion", "--cache-dir", str(tmp_path / "cache"), "--tracking-uri", uri,
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pulled = Path(r.stdout.strip())
    assert pulled.read_bytes() == SHIPPED.read_bytes()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    mv = client.get_model_version_by_alias("digits-decoder", "champion")
    folder = Path(client.download_artifacts(mv.run_id, "model", str(tmp_path / "dl")))
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    assert {"onnx", "python_function"} <= set(mlmodel["flavors"])
    latent = ort.InferenceSession(str(SHIPPED)).get_inputs()[0].shape[1]
    assert json.loads(mlmodel["signature"]["inputs"])[0]["tensor-spec"] == {"dtype": "float32", "shape": [-1, latent]}
    assert json.loads(mlmodel["signature"]["outputs"])[0]["tensor-spec"]["shape"] == [-1, 1, 8, 8]
    reqs = (folder / "requirements.txt").read_text().split()
    from vaezoo.tracking.models import pip_requirements

    assert set(pip_requirements()) <= set(reqs) and all("==" in p for p in pip_requirements())
    example = np.asarray(json.loads((folder / "input_example.json").read_text()), dtype=np.float32)
    assert example.shape == (4, latent)
    assert client.get_run(mv.run_id).data.tags["vaezoo.kind"] == "publish"


def test_publish_refuses_a_bad_name_before_any_work(tmp_path):
    r = _cli("publish", str(SHIPPED), "--name", "../evil", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: invalid registry URI") and len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "m.db").exists()


@pytest.mark.slow
def test_mlflow_models_serve_returns_what_onnxruntime_computes(tmp_path):
    """publish -> `mlflow models serve -m models:/NAME@ALIAS --env-manager local` -> POST a batch of z."""
    import urllib.request

    import onnxruntime as ort

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert _cli("publish", str(SHIPPED), "--name", "dec", "--alias", "prod", "--tracking-uri", uri, cwd=tmp_path).returncode == 0
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    server = subprocess.Popen([str(mlflow_bin), "models", "serve", "-m", "models:/dec@prod", "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port)], cwd=tmp_path, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", server)
        sess = ort.InferenceSession(str(SHIPPED))
        z = np.random.default_rng(3).standard_normal((16, sess.get_inputs()[0].shape[1])).astype(np.float32)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", json.dumps({"inputs": z.tolist()}).encode(),
                                     {"Content-Type": "application/json"})
        served = json.loads(urllib.request.urlopen(req, timeout=60).read())["predictions"]
        served = np.asarray(served["x"] if isinstance(served, dict) else served, dtype=np.float32)
        expected = sess.run(None, {sess.get_inputs()[0].name: z})[0]
        assert served.shape == expected.shape == (16, 1, 8, 8)
        np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
