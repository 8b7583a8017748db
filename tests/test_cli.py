"""The CLI as a user drives it: every bad input is one clear error with exit code 2 and touches nothing;
eval writes its JSON, sample writes PNGs."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest

from vaezoo.cli import main

SMALL = ["--dataset", "digits", "--set", "model.hidden=[32]", "--latent-dim", "4", "--batch-size", "32",
         "--eval-every", "20", "--checkpoint-every", "20", "--no-progress", "--no-track"]


def snapshot(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    run = root / "run"
    assert main(["train", *SMALL, "--steps", "40", "--run-dir", str(run)]) == 0
    return run


BAD = [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--dataset", "cifar"], "unknown dataset 'cifar'"),
    (["--estimator", "magic"], "unknown estimator 'magic'"),
    (["--set", "model.wings=2"], "unknown config key 'model.wings'"),
    (["--set", "optimizer.lr=1"], "unknown config key 'optimizer'"),
    (["--batch-size", "0"], "batch_size must be > 0"),
    (["--steps", "-5"], "steps must be > 0"),
    (["--latent-dim", "0"], "latent_dim must be > 0"),
    (["--set", "model.hidden=[32,-1]"], "layer sizes must be > 0"),
    (["-k", "0"], "must be >= 1"),
    (["--model", "iwae", "--estimator", "dreg", "-k", "0"], "must be >= 1"),
    (["--estimator", "dreg"], "does not apply to bound 'elbo'"),
    (["--model", "ae", "--estimator", "dreg"], "has no latent noise"),
    (["--dataset", "mnist", "--data-dir", "/nonexistent/vaezoo"], "does not exist"),
    (["--batch-size", "100000"], "exceeds"),
    (["--betas", "1.5", "0.9"], "betas must be two numbers in [0, 1)"),
    (["--eps", "0"], "lr and eps must be > 0"),
    (["--lr", "nan"], "lr and eps must be > 0 and finite"),
    (["--lr", "inf"], "lr and eps must be > 0 and finite"),
    (["--beta", "nan"], "beta must be >= 0 and finite"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_train_input_is_one_clear_error_and_touches_nothing(trained_run, tmp_path, capsys, args, message):
    before = snapshot(trained_run)
    target = tmp_path / "new-run"
    assert main(["train", *SMALL, *args, "--run-dir", str(target)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not target.exists() or not any(target.iterdir())
    # pointed at the existing run, the same options change nothing there either
    assert main(["train", *SMALL, *args, "--run-dir", str(trained_run)]) == 2
    assert snapshot(trained_run) == before


# (argv without the folder, what the error calls the folder, the function whose call starts the command's work:
# the module attribute the command looks up at call time, so patching it replaces what really runs)
UNMAKEABLE = [
    # train: load_dataset/build run before make_dir (they validate the batch size); the loop's first call is the work
    (["train", *SMALL, "--steps", "5", "--run-dir"], "run directory", "vaezoo.training.loop.batch_indices"),
    (["bench", "throughput", "--batch-size", "8", "--backbone", "mlp", "--mode", "eager", "--windows", "1",
      "--window-s", "0.01", "--warmup-s", "0", "--no-track", "--out-dir"], "output folder", "vaezoo.bench.throughput.command.run_throughput"),
    # gradvar: load_source (load or train the model) comes before run_study, so guarding it guards both
    (["bench", "gradvar", "--quick", "--no-track", "--no-progress", "--out"], "output folder", "vaezoo.bench.gradvar.load_source"),
    (["bench", "claims", "--preset", "tiny", "--only", "kl-direction", "--no-track", "--out"], "output folder", "vaezoo.bench.claims.run_claims"),
    (["bench", "sampling", "--no-track", "--out-dir"], "output folder", "vaezoo.bench.sampling.sampling_bench"),
    (["study", "kl-direction", "--preset", "tiny", "--no-track", "--out"], "output folder", "vaezoo.studies.runner.run_jobs"),
]


class WorkReached(Exception):
    """Raised by the stand-in for a command's work once its output folder exists (the control run)."""


@pytest.mark.parametrize("args,what,work", UNMAKEABLE, ids=[" ".join(a[:2]) for a, _, _ in UNMAKEABLE])
def test_an_output_folder_that_cannot_be_made_is_one_clear_error_before_any_work(tmp_path, capsys, monkeypatch, args, what, work):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a folder cannot be made below a file, whoever runs the test
    target = blocker / "out"

    def work_stand_in(*_, **__):
        if not target.is_dir():
            pytest.fail("work started before the output folder was made")
        raise WorkReached(work)

    monkeypatch.setattr(work, work_stand_in)  # raising=True: a renamed function fails here, not silently
    assert main([*args, str(target)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: cannot create {what} '{target}'") and len(err.strip().splitlines()) == 1
    assert out == ""  # nothing is printed before the folder is made
    # control: with a folder that can be made the command does reach the stand-in, so the guard above is live
    target = tmp_path / "out"
    with pytest.raises(WorkReached):
        main([*args, str(target)])


def test_a_file_that_cannot_be_written_is_one_clear_error(trained_run, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["export", str(trained_run), "--out", str(blocker / "decoder.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot ") and str(blocker) in err and len(err.strip().splitlines()) == 1
    assert ".tmp" not in err  # the path the user gave, not atomic_write's temp file


def test_adam_options_reach_the_config(tmp_path):
    run = tmp_path / "adam"
    args = ["--steps", "2", "--betas", "0.5", "0.9", "--eps", "1e-6", "--lr", "0.01", "--no-fused"]
    assert main(["train", *SMALL, *args, "--run-dir", str(run)]) == 0
    optim = json.loads((run / "config.json").read_text())["config"]["optim"]
    assert optim == {"lr": 0.01, "betas": [0.5, 0.9], "eps": 1e-6, "fused": False, "milestones": [], "gamma": 1.0}
    # the same options again on --resume are no change
    assert main(["train", "--resume", str(run), "--betas", "0.5", "0.9", "--no-fused", "--no-track"]) == 0


def test_missing_mnist_files_are_listed(tmp_path, capsys):
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--no-track"]) == 2
    assert "train-images-idx3-ubyte" in capsys.readouterr().err


def test_resume_with_a_different_config_is_refused(trained_run, capsys):
    before = snapshot(trained_run)
    assert main(["train", "--resume", str(trained_run), "--lr", "0.5", "--no-track"]) == 2
    assert "resume with a different config: optim.lr" in capsys.readouterr().err
    assert snapshot(trained_run) == before


def test_corrupt_checkpoint_is_reported(trained_run, tmp_path, capsys):
    run = tmp_path / "corrupt"
    shutil.copytree(trained_run, run)
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    before = snapshot(run)
    assert main(["eval", str(run), "--no-track"]) == 2
    assert "is corrupt or not a vaezoo checkpoint" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--no-track"]) == 2
    assert "is corrupt" in capsys.readouterr().err
    assert snapshot(run) == before
    assert main(["eval", str(tmp_path / "absent"), "--no-track"]) == 2
    assert "not a vaezoo run directory" in capsys.readouterr().err
    for text, message in (("{", "is not valid JSON"), ('{"config": 1}', "lacks its 'config' object")):
        (run / "config.json").write_text(text)
        assert main(["eval", str(run), "--no-track"]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("text,message", [("{bad", "is not valid JSON"), ("[1, 2]", "must hold a JSON object, got a list")])
def test_a_config_file_that_is_not_a_json_object_is_one_clear_error(tmp_path, capsys, text, message):
    config = tmp_path / "c.json"
    config.write_text(text)
    for argv in (["train", "--config", str(config), "--no-track", "--run-dir", str(tmp_path / "run")],
                 ["bench", "gradvar", "--config", str(config), "--quick", "--no-track", "--out", str(tmp_path / "g")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: config file '{config}'") and message in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "run").exists()


def test_eval_writes_json_with_every_metric(trained_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(trained_run), "-k", "16", "--is-samples", "200", "--max-test", "50", "--out", str(out), "--no-track"]) == 0
    report = json.loads(out.read_text())
    for key in ("elbo", "iwae_k16", "ll_is", "ll_is_mc_se", "recon", "kl", "kl_per_unit", "active_units",
                "ll_is_ci_low", "ll_is_ci_high", "ll_is_s10", "ll_is_s2", "ll_is_ess_median", "ll_is_ess_min",
                "ll_is_ess_below", "borderline_units", "mi", "mi_n", "elbo_bits_per_dim"):
        assert key in report
    printed = capsys.readouterr().out
    assert "active units:" in printed and "I(x; z)" in printed and "bits per dimension" in printed
    assert "log-likelihood (IS, S = 200)" in printed and "95% interval" in printed and "at S/10 = 20" in printed
    assert report["elbo_bits_per_dim"] == pytest.approx(-report["elbo"] / (64 * math.log(2)))
    assert len(report["kl_per_unit"]) == 4 and 0 <= report["active_units"] <= 4
    # the bounds are ordered: ELBO <= IWAE_16 <= IS estimate (S=200 >> 16), within Monte Carlo error
    assert report["elbo"] <= report["iwae_k16"] + 0.2 <= report["ll_is"] + 0.4
    # a Bernoulli log-likelihood is <= 0 and a KL >= 0
    assert report["recon"] <= 0 <= report["kl"]
    # recon must be E_q[log p(x|z)] on the points eval scored: check it against an independent Monte Carlo
    # estimate on the same first 50 test images (eval_binarized's default seed, as evaluate_run uses)
    import torch

    from vaezoo.data.datasets import eval_binarized, load_dataset
    from vaezoo.training import load_run_model

    model, cfg = load_run_model(trained_run)
    x = eval_binarized(load_dataset(cfg.data).test, cfg.data.binarize)[:50]
    assert report["n"] == len(x) == 50
    draws = 2000
    with torch.no_grad():
        q = model.encode(x)
        eps = torch.randn((draws, *q.mu.shape), generator=torch.Generator().manual_seed(12345))
        log_px_z = model.log_likelihood(x, q.mu + q.sigma * eps).double()  # [draws, points]
    mc = float(log_px_z.mean())
    # eval's recon is itself Monte Carlo: ELBO with one z per point (+ the analytic KL), so the difference has
    # variance sum_i s_i^2 / N^2 from eval's single draws plus sum_i s_i^2 / (draws N^2) from ours
    var_i = log_px_z.var(0, unbiased=True)
    se = float(torch.sqrt(var_i.sum() * (1 + 1 / draws))) / len(x)
    assert abs(mc - report["recon"]) < 4 * se, (mc, report["recon"], se)
    assert main(["eval", str(trained_run), "-k", "0", "--no-track"]) == 2


def test_sample_writes_prior_and_reconstruction_grids(trained_run, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "grid.png"
    assert main(["sample", str(trained_run), "-n", "16", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 8 and (tmp_path / "grid-recon.png").exists()
    assert main(["sample", str(trained_run), "-n", "0", "--out", str(out)]) == 2
    assert main(["sample", str(trained_run), "-n", "100000000", "--out", str(out)]) == 2  # not an out-of-memory traceback
    assert "between 1 and 4096" in capsys.readouterr().err


def test_help_on_every_command(capsys):
    for cmd in ("models", "datasets", "train", "eval", "sample"):
        assert main([cmd, "--help"]) == 0
    assert "train" in capsys.readouterr().out


def test_deterministic_flag_reaches_config_and_tags(tmp_path):
    run = tmp_path / "det"
    assert main(["train", *SMALL, "--steps", "20", "--deterministic", "--run-dir", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["config"]["deterministic"] is True
    assert json.loads((run / "run.json").read_text())["tags"]["deterministic_algorithms"] == "true"
    from vaezoo.tracking.provenance import set_determinism

    set_determinism(False)  # the flag is process-wide: leave the other tests as they were


def test_any_path_the_system_refuses_is_one_line_not_a_traceback(capsys):
    import click

    from vaezoo.cli.run import run_click

    @click.command()
    def refuse():
        raise PermissionError(13, "Permission denied", "/data/train-images-idx3-ubyte")

    assert run_click(refuse, []) == 2
    assert capsys.readouterr().err == "error: cannot use '/data/train-images-idx3-ubyte': Permission denied\n"
