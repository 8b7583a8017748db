"""Reproduction studies: the command's contract through the real command, the tiny preset of each study asserting
the claim's direction on fixed seeds, and results that do not depend on how jobs were scheduled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaezoo.studies import STUDIES, get_study
from vaezoo.studies.runner import run_study

VAEZOO = Path(sys.executable).parent / "vaezoo"


def vaezoo(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(VAEZOO), *args], capture_output=True, text=True, cwd=cwd, timeout=300, env=env)


def one_error_line(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert all(w in proc.stderr for w in words), proc.stderr


def test_list_names_each_study_on_one_line(tmp_path):
    proc = vaezoo("study", "--list", cwd=tmp_path)
    assert proc.returncode == 0
    lines = proc.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(STUDIES)


def test_every_registered_study_has_tiny_quick_and_full_presets_whose_jobs_are_json(monkeypatch):
    import vaezoo.studies.batch_size as batch_size

    # batch-size measures step times to set its budgets; forming its jobs needs only some calibration
    monkeypatch.setattr(batch_size, "calibrate", lambda params, sizes, n: {"sec_per_step": {str(b): 1e-3 for b in sizes}})
    for name in STUDIES:
        study = get_study(name)
        assert {"tiny", "quick", "full"} <= set(study.presets), name
        for preset, params in study.presets.items():  # the full recipes are not run here: at least their jobs form
            params = {k: v for k, v in params.items() if k != "seeds"}
            jobs = study.jobs(params, [0, 1, 2])
            assert len({j.key for j in jobs}) == len(jobs) >= 3, (name, preset)
            json.dumps([j.payload for j in jobs])


def test_bad_input_is_one_error_line_and_nothing_is_written(tmp_path):
    one_error_line(vaezoo("study", "no-such-study", "--out", "a", "--no-track", cwd=tmp_path), "unknown study", "prior-sampling")
    one_error_line(vaezoo("study", "kl-direction", "--preset", "huge", "--out", "b", "--no-track", cwd=tmp_path),
                   "unknown preset", "tiny")
    one_error_line(vaezoo("study", "prior-sampling", "--seeds", "2", "--out", "c", "--no-track", cwd=tmp_path), "--seeds")
    assert not any((tmp_path / d).exists() for d in "abc")
    # a folder holding another study's results is refused, untouched, unless --force
    other = tmp_path / "other"
    other.mkdir()
    (other / "study.json").write_text(json.dumps({"study": "organisation"}))
    one_error_line(vaezoo("study", "kl-direction", "--preset", "tiny", "--out", str(other), "--no-track", cwd=tmp_path),
                   "organisation", "--force")
    assert sorted(p.name for p in other.iterdir()) == ["study.json"]
    proc = vaezoo("study", "kl-direction", "--preset", "tiny", "--out", str(other), "--no-track", "--force", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((other / "study.json").read_text())["study"] == "kl-direction"
    assert "kl-direction: holds." in proc.stdout
    # a folder of unrelated files is refused too
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    one_error_line(vaezoo("study", "kl-direction", "--preset", "tiny", "--out", "mine", "--no-track", cwd=tmp_path),
                   "holds no study's results")


@pytest.fixture(scope="module")
def prior_sampling_tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("prior-sampling")
    return out, run_study("prior-sampling", "tiny", out, workers=0, track=False)


def test_prior_sampling_tiny_ae_scores_worse_than_the_vae_on_every_seed(prior_sampling_tiny):
    out, record = prior_sampling_tiny
    jobs, numbers = record["jobs"], record["numbers"]
    assert numbers["controls_valid"]
    for seed in record["seeds"]:
        assert jobs[f"ae/seed{seed}"]["mmd2"] > jobs[f"vae/seed{seed}"]["mmd2"] + 0.1
    assert numbers["mmd2_ae_minus_vae"]["lo"] > 0
    assert record["verdict"] == "holds"
    report = (out / "report.md").read_text()
    assert "**Verdict: holds.**" in report and "control: N(0, 21 I)" in report
    for png in ("mmd.png", "ae-prior-samples.png", "vae-prior-samples.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")


def test_study_results_do_not_depend_on_scheduling(prior_sampling_tiny, tmp_path):
    _, in_process = prior_sampling_tiny
    two_workers = run_study("prior-sampling", "tiny", tmp_path / "w2", workers=2, track=False)
    assert two_workers["jobs"] == in_process["jobs"]
    assert two_workers["numbers"] == in_process["numbers"]


def test_kl_direction_tiny_q_p_is_narrow_on_one_mode_and_p_q_is_moment_matching(tmp_path):
    record = run_study("kl-direction", "tiny", tmp_path / "kl", workers=0, track=False)
    n = record["numbers"]
    assert record["verdict"] == "holds"
    assert n["q_p_narrower_every_start"] and n["p_q_is_moment_matching"]
    assert abs(abs(n["q_p_best_fit"]["m"]) - 2.0) < 0.01 and abs(n["q_p_best_fit"]["sigma"] - 0.5) < 0.01


def test_organisation_tiny_controls_and_the_ae_organises_better_than_a_high_beta_vae(tmp_path):
    record = run_study("organisation", "tiny", tmp_path / "org", workers=0, track=False)
    controls, jobs = record["numbers"]["controls"], record["jobs"]
    assert controls["binary pixels (the models' input)"] > 0.7  # an identity representation separates the digits
    assert controls["constant"] < 0.2 and controls["pixels, shuffled labels"] < 0.2  # chance is 1/10
    for seed in record["seeds"]:  # beta = 4 squeezes the codes towards the prior; reconstruction alone does not
        assert jobs[f"ae/seed{seed}"]["knn_accuracy"] > jobs[f"beta4/seed{seed}"]["knn_accuracy"]
    assert record["verdict"] in ("holds", "does not hold", "depends") and (tmp_path / "org" / "knn.png").is_file()


def test_samples_per_z_tiny_k1_beats_k16_at_equal_compute_and_iwae_bounds_sit_above_the_elbo(tmp_path):
    record = run_study("samples-per-z", "tiny", tmp_path / "spz", workers=0, track=False)
    jobs = record["jobs"]
    for seed in record["seeds"]:
        assert jobs[f"elbo-k1/seed{seed}"]["elbo"] > jobs[f"elbo-k16/seed{seed}"]["elbo"]
    for key, r in jobs.items():  # L_1 <= L_64 on the same model, and the IS estimate is the tightest
        assert r["iwae_k64"] >= r["elbo"], key
        assert r["ll_is"] >= r["elbo"], key
    assert record["verdict"] == "holds"


def test_beta_sweep_tiny_high_beta_shrinks_kl_and_active_units_and_beta0_reconstructs_best(tmp_path):
    record = run_study("beta-sweep", "tiny", tmp_path / "beta", workers=2, track=False)
    jobs, seeds = record["jobs"], record["seeds"]
    for s in seeds:
        b0, b1, b64 = (jobs[f"beta{b}/seed{s}"] for b in ("0", "1", "64"))
        assert b64["kl"] < b1["kl"] < b0["kl"]
        assert b64["active_units"] <= b1["active_units"]
        assert b0["recon"] > b1["recon"]
        assert b1["elbo"] <= b1["ll_is"]  # the logged ELBO is the beta = 1 bound, below the IS estimate
    assert sum(jobs[f"beta64/seed{s}"]["active_units"] for s in seeds) < sum(jobs[f"beta1/seed{s}"]["active_units"] for s in seeds)
    assert (tmp_path / "beta" / "sweep.png").is_file() and (tmp_path / "beta" / "samples-beta64.png").is_file()
    # the shapes half: beta = 64 collapses units on every seed; MIG is in [0, 1] and the report shows its controls
    for s in seeds:
        b1, b64 = jobs[f"shapes/beta1/seed{s}"], jobs[f"shapes/beta64/seed{s}"]
        assert b64["active_units"] < b1["active_units"] and b64["kl"] < b1["kl"]
        assert 0 <= b64["mig"] <= 1 and (b64["active_units"] > 0 or b64["mig_active"] == 0)
    shapes = record["numbers"]["shapes"]
    assert shapes["checks"]["beta64"]["active_units"] == "below" and shapes["verdict"] in ("holds", "does not hold")
    assert shapes["mig_controls"]["the factors + 4 noise units"] > 0.95
    assert record["numbers"]["verdicts"]["combined"] == record["verdict"]
    assert (tmp_path / "beta" / "shapes-traversal-beta64.png").is_file() and "MIG" in (tmp_path / "beta" / "report.md").read_text()


@pytest.mark.slow
def test_a_tracked_study_is_one_parent_run_with_each_fit_and_training_a_child(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    record = run_study("prior-sampling", "tiny", tmp_path / "ps", workers=2, track=True, tracking_uri=uri)
    run_study("kl-direction", "tiny", tmp_path / "kl", workers=0, track=True, tracking_uri=uri)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("vaezoo")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = {r.info.run_name: r for r in runs if r.data.tags.get("vaezoo.kind") == "study"}
    assert set(parents) == {"study-prior-sampling-tiny", "study-kl-direction-tiny"}
    ps = parents["study-prior-sampling-tiny"]
    assert ps.data.tags["vaezoo.verdict"] == record["verdict"] and ps.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == ps.info.run_id]
    assert len(children) == len(record["jobs"]) and all(c.data.tags["vaezoo.kind"] == "train" for c in children)
    fits = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents["study-kl-direction-tiny"].info.run_id]
    assert len(fits) == 3
    artifacts = {a.path for a in client.list_artifacts(ps.info.run_id)}
    assert {"report.md", "study.json", "mmd.png"} <= artifacts


def shadowed(tmp_path: Path, module: str, body: str) -> dict:
    """An environment in which `import module` runs ``body`` instead (a package that is absent, or must not be used)."""
    import os

    (tmp_path / module).mkdir()
    (tmp_path / module / "__init__.py").write_text(body)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[1])])}


def test_study_list_and_help_load_no_torch(tmp_path):
    env = shadowed(tmp_path, "torch", "raise ImportError('torch is not installed here')\n")
    for args in (["study", "--list"], ["study", "--help"]):
        proc = subprocess.run([str(VAEZOO), *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    # control: running a study does need torch, so the block is real
    proc = subprocess.run([str(VAEZOO), "study", "kl-direction", "--preset", "tiny", "--no-track", "--out", "o"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0 and "torch is not installed here" in proc.stderr


def test_dreg_gain_tiny_dreg_beats_reparam_on_each_seed_and_iwae_bounds_sit_above_the_elbo(tmp_path):
    record = run_study("dreg-gain", "tiny", tmp_path / "dreg", workers=0, track=False)
    jobs = record["jobs"]
    for key, r in jobs.items():
        assert r["elbo"] <= r["iwae_k64"] <= r["ll_is"] + 3 * r["ll_is_mc_se"] + 1e-6, key  # L_1 <= L_64 <~ L_S
    for seed in record["seeds"]:  # the same seed, data and noise: only the encoder's estimator differs
        assert jobs[f"dreg/seed{seed}"]["ll_is"] > jobs[f"reparam/seed{seed}"]["ll_is"]  # the claim's direction
    assert record["numbers"]["dreg_minus_reparam"]["ll_is"]["n"] == 3


def test_interpolation_tiny_controls_and_paths(tmp_path):
    record = run_study("interpolation", "tiny", tmp_path / "interp", workers=0, track=False)
    n = record["numbers"]
    assert n["controls_valid"] and n["controls"]["two clusters"] > 10 * n["controls"]["ball N(0, I)"]
    for key, r in record["jobs"].items():
        assert r["roughness"] >= 1.0 - 1e-9, key  # a path is never shorter than the straight line between its ends
        assert 0.3 < r["off_support_ratio"] < 3, key
    assert (tmp_path / "interp" / "ae-paths.png").read_bytes().startswith(b"\x89PNG")


def test_off_support_ratio_is_one_for_held_out_codes_themselves():
    import torch

    from vaezoo.studies.measures import off_support_ratio

    g = torch.Generator().manual_seed(0)
    train, held = torch.randn(1000, 4, generator=g), torch.randn(300, 4, generator=g)
    assert off_support_ratio(held, train, held) == 1.0
    assert off_support_ratio(held + 10, train, held) > 5


def closed_port() -> int:
    """A local port nothing listens on (bound by the OS, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_missing_or_unreachable_is_one_error_line_before_the_output_folder_is_made(tmp_path):
    args = ["study", "prior-sampling", "--preset", "tiny", "--no-track", "--out", "o"]
    env = shadowed(tmp_path, "ray", "raise ModuleNotFoundError('No module named ray')\n")
    proc = subprocess.run([str(VAEZOO), *args, "--ray", "127.0.0.1:6379"], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp_path)
    one_error_line(proc, "--ray", "pip install 'vaezoo[ray]'")
    assert not (tmp_path / "o").exists()
    # a Ray whose init would hang on a closed port for minutes: refused by the reachability check, init never runs
    (tmp_path / "ray" / "__init__.py").write_text("def init(*a, **k):\n    raise AssertionError('init was called')\n")
    address = f"127.0.0.1:{closed_port()}"
    proc = subprocess.run([str(VAEZOO), *args, "--ray", address], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp_path)
    one_error_line(proc, "cannot reach a Ray cluster", address)
    assert not (tmp_path / "o").exists()
    one_error_line(vaezoo(*args, "--ray", address, "--workers", "2", cwd=tmp_path), "--workers", "--ray")


@pytest.fixture
def ray_head():
    """A one-node Ray cluster on 127.0.0.1 (2 CPUs) for the test: its address and the environment a driver needs
    (this cluster's own auth token, so a token in ~/.ray from another Ray does not decide). Stopped by killing its
    own process group, never `ray stop`, which would stop every Ray on the machine."""
    import os
    import secrets
    import shutil
    import signal
    import tempfile
    import time

    pytest.importorskip("ray", reason="Ray is not installed (pip install 'vaezoo[ray]'; `make test-slow` does)")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    root = Path(tempfile.mkdtemp(prefix="ray"))  # short: Ray's socket paths under it must stay < 108 characters
    port = closed_port()
    log = root / "head.log"
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
           "--port", str(port), "--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats",
           "--dashboard-agent-listen-port", str(closed_port()), "--temp-dir", str(root / "t")]
    with open(log, "w") as f:
        head = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", env
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        for _ in range(10):  # its processes may still be writing logs for a moment after the head is gone
            shutil.rmtree(root, ignore_errors=True)
            if not root.exists():
                break
            time.sleep(1)


@pytest.mark.slow
def test_a_study_on_a_local_ray_cluster_gives_the_in_process_numbers(ray_head, tmp_path):
    address, env = ray_head
    args = ["study", "prior-sampling", "--preset", "tiny", "--no-track"]  # two models (AE, VAE) x 3 seeds
    on_ray = vaezoo(*args, "--ray", address, "--out", "ray", "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path, env=env)
    assert on_ray.returncode == 0, on_ray.stderr
    here = vaezoo(*args, "--workers", "0", "--out", "here", cwd=tmp_path)
    assert here.returncode == 0, here.stderr
    ray_record, here_record = (json.loads((tmp_path / d / "study.json").read_text()) for d in ("ray", "here"))
    assert len(ray_record["jobs"]) == 6
    assert ray_record["jobs"] == here_record["jobs"] and ray_record["numbers"] == here_record["numbers"]
    assert list(ray_record["jobs"]) == list(here_record["jobs"])  # gathered in the jobs' order
    print(f"on Ray at {address}: {on_ray.stdout.strip()}")
    # the tasks wrote their run folders where the driver said (the shared folder of a multi-node cluster)
    assert len(list((tmp_path / "runs").glob("*/*/final.json"))) == 6


def test_burda_table1_tiny_iwae_bound_sits_above_the_elbo_and_every_number_comes_from_the_best_held_out_state(tmp_path):
    record = run_study("burda-table1", "tiny", tmp_path / "burda", workers=0, track=False)
    jobs = record["jobs"]
    assert set(jobs) == {f"{arm}/seed{s}" for arm in ("vae-k1", "vae-k5", "iwae-k5") for s in range(3)}
    for seed in record["seeds"]:
        r = jobs[f"iwae-k5/seed{seed}"]
        assert r["train_bound"] > r["elbo"]  # IWAE-5 above the ELBO on the same model and test images
        assert r["elbo"] <= -r["nll"] + 3 * r["ll_is_mc_se"]  # and the ELBO under the IS log-likelihood
    for key, r in jobs.items():
        curve = r["validation_curve"]
        assert [e for e, _ in curve] == [5.0 * (i + 1) for i in range(len(curve))], key  # every 5 epochs
        assert r["validation_best"] == max(v for _, v in curve), key  # the evaluated state is the best one seen
        assert r["best_epoch"] <= r["stopped_epoch"] <= 30, key
    n = record["numbers"]
    assert n["models"]["iwae-k1"]["nll"] == n["models"]["vae-k1"]["nll"]  # k = 1 is one model for both rows
    assert n["paper"]["iwae-k5"] == {"nll": 85.54, "active_units": 22}
    assert set(n["checks"]) == {"IWAE NLL k=5 - k=1", "NLL IWAE - VAE at k=5", "IWAE active units k=5 - k=1"}
    report = (tmp_path / "burda" / "report.md").read_text()
    assert "not comparable with the paper's" in report and "86.76" in report


def test_early_stopping_stops_after_its_patience_and_restores_the_best_state(tmp_path):
    """A scripted held-out score peaking at the 2nd evaluation: with patience 2 the run stops at the 4th, and the
    restored weights are bit-identical to a run trained only to the 2nd."""
    from vaezoo.studies.training import EarlyStopping
    from vaezoo.training.config import resolve_config
    from vaezoo.training.loop import train
    from vaezoo.training.rundir import load_checkpoint, load_run_model

    def small(steps):
        return resolve_config({"model": {"hidden": [16], "latent_dim": 2}, "data": {"name": "digits"}, "batch_size": 32,
                               "steps": steps, "eval_every": 10, "checkpoint_every": steps, "eval_k": 1}, (1, 8, 8))

    scores = iter([1.0, 3.0, 2.0, 2.5, 9.0, 9.0])
    stopper = EarlyStopping(lambda model: next(scores), patience=2)
    final = train(small(100), tmp_path / "stopped", track=False, progress=False, observe=stopper)
    assert final["step"] == 40 and stopper.history == [(10, 1.0), (20, 3.0), (30, 2.0), (40, 2.5)]
    assert (stopper.best, stopper.best_step) == (3.0, 20)
    model, _ = load_run_model(tmp_path / "stopped")
    restored = stopper.restore(model).state_dict()
    train(small(20), tmp_path / "to20", track=False, progress=False)
    best = load_checkpoint(tmp_path / "to20" / "checkpoint.pt")["model"]
    assert restored.keys() == best.keys() and all(torch.equal(restored[k], best[k]) for k in best)
    never = EarlyStopping(lambda model: 0.0, patience=None)  # keeps the best (the first), never stops
    assert train(small(30), tmp_path / "never", track=False, progress=False, observe=never)["step"] == 30
    assert never.best_step == 10 and len(never.history) == 3


def test_burda_table1_full_is_the_papers_networks_adam_and_schedule():
    """The full preset's config: 784-200-200-50 tanh, data-mean output bias, Adam eps 1e-4, batch 20, 3,280 epochs
    in 3^i-epoch stages at lr 1e-3 x 10^(-i/7) (built without the MNIST files: sizes are given)."""
    from vaezoo.studies.burda_table1 import STUDY
    from vaezoo.training.config import resolve_for_dataset

    params = dict(STUDY.presets["full"])
    cfg = resolve_for_dataset(STUDY.config(params, 0, "IWAE", 50, n_train=50000))
    m, per_epoch = cfg.model, 50000 // 20
    assert (m.hidden, m.latent_dim, m.activation, m.output_bias, m.backbone) == ((200, 200), 50, "tanh", "data-mean", "mlp")
    assert (cfg.objective.bound, cfg.objective.k, cfg.optim.eps, cfg.batch_size) == ("iwae", 50, 1e-4, 20)
    assert cfg.steps == 3280 * per_epoch and cfg.data.validation == 10000
    o = cfg.optim
    assert o.milestones[:3] == (per_epoch, 4 * per_epoch, 13 * per_epoch) and len(o.milestones) == 7
    assert o.lr_at(0) == 1e-3 and o.lr_at(per_epoch) == pytest.approx(1e-3 * 10 ** (-1 / 7))
    assert o.lr_at(cfg.steps - 1) == pytest.approx(1e-4)  # the last stage: 10^(-7/7)
    vae = resolve_for_dataset(STUDY.config(params, 0, "VAE", 5, n_train=50000))
    assert (vae.objective.bound, vae.objective.k) == ("elbo", 5) and vae.model == cfg.model


DOCS = Path(__file__).resolve().parents[1] / "docs" / "studies"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STUDIES))
def test_each_committed_quick_report_is_reproduced_by_its_command(name, tmp_path):
    """`make studies` is the contract behind docs/studies: rerunning a study's quick preset gives the committed
    verdict from the same jobs. (Numbers are compared only by the verdict they lead to: another CPU's float sums
    move trained weights, and batch-size's budgets come from this machine's calibrated step times.)"""
    committed = json.loads((DOCS / name / "study.json").read_text())
    record = run_study(name, "quick", tmp_path / name, track=False)
    assert record["jobs"].keys() == committed["jobs"].keys()
    assert record["verdict"] == committed["verdict"], (record["why"], committed["why"])
