"""The main job behind ``make bench``: train the reference VAE on mnist5k, evaluate it, draw samples,
log everything to the local MLflow store, and print where it all is.

Reference VAE: Bernoulli-logit MLP, 784-512-256 ReLU -> 32-d Gaussian latent, mirror decoder, Adam 1e-3,
batch 128, one z sample, closed-form KL (the model of shared/ANCHORS.md).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import click

from vaezoo.errors import VaezooError

REFERENCE = {"model": {"name": "vae"}, "data": {"name": "mnist5k"}, "steps": 3000, "eval_every": 1000, "checkpoint_every": 1000}


def main_job(out_root: str = "runs/bench", steps: int | None = None, is_samples: int = 5000, track: bool = True) -> dict:
    from vaezoo.data import DATASET_SHAPES
    from vaezoo.evaluate_run import evaluate_run
    from vaezoo.runconfig import resolve_config
    from vaezoo.tracking import tracking_uri
    from vaezoo.train import train

    user = copy.deepcopy(REFERENCE)  # the caller's changes must not touch REFERENCE
    if steps is not None:
        user["steps"] = steps
        user["eval_every"] = user["checkpoint_every"] = min(steps, 1000)
    cfg = resolve_config(user, DATASET_SHAPES["mnist5k"])
    run_dir = Path(out_root) / f"vae-mnist5k-{time.strftime('%Y%m%d-%H%M%S')}-{cfg.hash[:8]}"
    t0 = time.perf_counter()
    train(cfg, run_dir, track=track)
    t_train = time.perf_counter() - t0
    report, eval_path = evaluate_run(run_dir, k=64, is_samples=is_samples, track=track)
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
        "mlflow": tracking_uri() if track else "off",
    }
    summary["gradvar"] = _quick_gradvar(run_dir, track)
    return summary


def _quick_gradvar(run_dir: Path, track: bool) -> str:
    """The quick gradient-variance study on the model just trained; if it fails, the main job's summary still prints."""
    try:
        from vaezoo.bench.gradvar import quick_study

        return quick_study(run_dir, track=track)["paths"]["summary"]
    except Exception as exc:  # any failure here is reported in the summary, not raised
        return f"failed ({type(exc).__name__}: {exc})"


@click.command("main")
@click.option("--steps", type=int, default=None, help="Training steps (default 3000).")
@click.option("--is-samples", type=int, default=5000, show_default=True)
@click.option("--out-root", default="runs/bench", show_default=True)
@click.option("--no-track", is_flag=True)
def main_command(steps, is_samples, out_root, no_track) -> None:
    """The main job: train, evaluate and sample the reference VAE on mnist5k."""
    if steps is not None and steps <= 0:
        raise VaezooError(f"--steps must be > 0, got {steps}")
    s = main_job(out_root, steps, is_samples, track=not no_track)
    click.echo("\n== vaezoo main job: reference VAE on mnist5k ==")
    click.echo(f"test ELBO                      {s['test_elbo']:.2f} nats")
    click.echo(f"test IWAE bound (K=64)         {s['test_iwae_k64']:.2f} nats")
    if s["test_ll_is"] is not None:
        click.echo(f"test log-likelihood (IS, {is_samples})  {s['test_ll_is']:.2f} +- {s['test_ll_is_mc_se']:.3f} nats (MC s.e.)")
    click.echo(f"active units                   {s['active_units']}")
    click.echo(f"run directory                  {s['run_dir']}")
    click.echo(f"samples                        {', '.join(s['samples'])}")
    click.echo(f"MLflow store                   {s['mlflow']}  (view: mlflow ui --backend-store-uri {s['mlflow']})")
    click.echo(f"gradient variance (quick)      {s['gradvar']}")
    if s["gradvar"].startswith("failed"):
        raise VaezooError(f"the quick gradient-variance study {s['gradvar']}")
