"""The main job behind ``make bench``: train the reference VAE on mnist5k, evaluate it, draw samples,
log everything to the local MLflow store, and print where it all is.

The reference run is ``vaezoo.training.config.REFERENCE``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import click

from vaezoo.cli.options import tracking_options
from vaezoo.core.errors import VaezooError


def main_job(out_root: str = "runs/bench", steps: int | None = None, is_samples: int = 5000, track: bool = True,
             uri: str | None = None, say=lambda line: None) -> dict:
    """Train, evaluate, sample and study the reference VAE; one parent MLflow run holds the job's runs.
    ``say`` is told before each long phase what it does and roughly how long it takes."""
    from vaezoo import tracking
    from vaezoo.data import DATASET_SHAPES
    from vaezoo.tracking import tracking_uri, ui
    from vaezoo.tracking.provenance import git_state
    from vaezoo.training.config import REFERENCE, resolve_config

    user = copy.deepcopy(REFERENCE)  # the caller's changes must not touch REFERENCE
    if steps is not None:
        user["steps"] = steps
        user["eval_every"] = user["checkpoint_every"] = min(steps, 1000)
    cfg = resolve_config(user, DATASET_SHAPES["mnist5k"])
    run_dir = Path(out_root) / f"vae-mnist5k-{time.strftime('%Y%m%d-%H%M%S')}-{cfg.hash[:8]}"
    parent = tracking.start(track, "bench", uri)
    status = "FAILED"
    try:
        ui.present(parent, f"bench-main-{ui.run_name(cfg.to_dict(), cfg.hash)}", "bench", git_state()["git_sha"],
                   entry="vaezoo bench main")
        with ui.parent_run(parent.run_id), ui.system_metrics(parent, interval_s=10):
            summary = _phases(cfg, run_dir, is_samples, track, uri, say)
        status = "FINISHED"
    finally:
        parent.end(status)
    summary["mlflow"] = tracking_uri(uri) if track else "off"
    summary["mlflow_run_id"] = parent.run_id
    summary["ui"] = ui.ui_link(parent)
    return summary


# The phase lengths told to the user are estimates from this run's own training speed (a shared or busy
# machine is slower in every phase alike); they are only told, never used to decide anything. Both ratios were
# measured in one `vaezoo bench main --steps 100 --is-samples 100` on a shared 2-core EPYC (1.06 s per training
# step there): the evaluation ran 36 importance samples (decoder passes, batched) in the time of one training
# example, and the quick gradient-variance study took as long as 1,090 training steps.
IS_SAMPLES_PER_TRAIN_EXAMPLE = 36.0
GRADVAR_STEPS = 1100


def _phases(cfg, run_dir: Path, is_samples: int, track: bool, uri: str | None, say) -> dict:
    from vaezoo.training.evaluate import evaluate_run
    from vaezoo.training.loop import train

    say(f"[1/4] training the reference VAE, {cfg.steps} steps of batch {cfg.batch_size} (the progress bar shows "
        "the time left; this speed sets the estimates below)")
    t0 = time.perf_counter()
    train(cfg, run_dir, track=track, tracking_uri=uri)
    t_train = time.perf_counter() - t0
    step_s = t_train / cfg.steps
    is_per_s = cfg.batch_size * IS_SAMPLES_PER_TRAIN_EXAMPLE / step_s
    say(f"[2/4] evaluating on the 1,000 test images: IWAE bound (K=64) and log-likelihood by importance sampling "
        f"with {is_samples} samples (roughly {_rough(1000 * (is_samples + 64) / is_per_s)})")
    report, eval_path = evaluate_run(run_dir, k=64, is_samples=is_samples, track=track, tracking_uri=uri)
    grids = (run_dir / "samples.png", run_dir / "samples-recon.png")  # written by train()
    summary = {
        "run_dir": str(run_dir),
        "train_seconds": round(t_train, 1),
        "test_elbo": report["elbo"],
        "test_iwae_k64": report["iwae_k64"],
        "test_ll_is": report.get("ll_is"),
        "test_ll_is_mc_se": report.get("ll_is_mc_se"),
        "active_units": report["active_units"],
        "eval_json": str(eval_path),
        "samples": [str(p) for p in grids],
    }
    say(f"[3/4] the quick gradient-variance study on the trained model (roughly {_rough(GRADVAR_STEPS * step_s)})")
    summary["gradvar"] = _quick_gradvar(run_dir, track, uri)
    return summary


def _rough(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _quick_gradvar(run_dir: Path, track: bool, uri: str | None) -> str:
    """The quick gradient-variance study on the model just trained; if it fails, the main job's summary still prints."""
    try:
        from vaezoo.bench.gradvar import quick_study

        return quick_study(run_dir, track=track, tracking_uri=uri)["paths"]["summary"]
    except Exception as exc:  # any failure here is reported in the summary, not raised
        return f"failed ({type(exc).__name__}: {exc})"


@click.command("main")
@click.option("--steps", type=int, default=None, help="Training steps (default 3000).")
@click.option("--is-samples", type=int, default=5000, show_default=True)
@click.option("--out-root", default="runs/bench", show_default=True)
@tracking_options
def main_command(steps, is_samples, out_root, no_track, tracking_uri) -> None:
    """The main job: train, evaluate and sample the reference VAE on mnist5k."""
    if steps is not None and steps <= 0:
        raise VaezooError(f"--steps must be > 0, got {steps}")
    s = main_job(out_root, steps, is_samples, track=not no_track, uri=tracking_uri, say=lambda m: click.echo(m, err=True))
    report = None
    if not no_track:
        from vaezoo.tracking.report import write_report

        click.echo("[4/4] writing the report of the MLflow experiment (a few seconds)", err=True)
        report = write_report("vaezoo", Path(s["run_dir"]) / "report", tracking_uri)["html"]
    click.echo("\n== vaezoo main job: reference VAE on mnist5k ==")
    click.echo(f"test ELBO                      {s['test_elbo']:.2f} nats")
    click.echo(f"test IWAE bound (K=64)         {s['test_iwae_k64']:.2f} nats")
    if s["test_ll_is"] is not None:
        click.echo(f"test log-likelihood (IS, {is_samples})  {s['test_ll_is']:.2f} +- {s['test_ll_is_mc_se']:.3f} nats "
                   "(s.d. of 10 replicate groups; a stochastic lower bound)")
    click.echo(f"active units                   {s['active_units']}")
    click.echo(f"run directory                  {s['run_dir']}")
    click.echo(f"samples                        {', '.join(s['samples'])}")
    click.echo(f"MLflow store                   {s['mlflow']}  (view: mlflow ui --backend-store-uri {s['mlflow']}, then "
               f"open {s['ui']})")
    click.echo(f"gradient variance (quick)      {s['gradvar']}")
    click.echo(f"report                         {report or 'not written (--no-track: the report is built from MLflow)'}")
    if s["gradvar"].startswith("failed"):
        raise VaezooError(f"the quick gradient-variance study {s['gradvar']}")
