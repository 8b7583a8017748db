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
             uri: str | None = None) -> dict:
    from vaezoo.data import DATASET_SHAPES
    from vaezoo.tracking import tracking_uri
    from vaezoo.training.config import REFERENCE, resolve_config
    from vaezoo.training.evaluate import evaluate_run
    from vaezoo.training.loop import train

    user = copy.deepcopy(REFERENCE)  # the caller's changes must not touch REFERENCE
    if steps is not None:
        user["steps"] = steps
        user["eval_every"] = user["checkpoint_every"] = min(steps, 1000)
    cfg = resolve_config(user, DATASET_SHAPES["mnist5k"])
    run_dir = Path(out_root) / f"vae-mnist5k-{time.strftime('%Y%m%d-%H%M%S')}-{cfg.hash[:8]}"
    t0 = time.perf_counter()
    train(cfg, run_dir, track=track, tracking_uri=uri)
    t_train = time.perf_counter() - t0
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
        "mlflow": tracking_uri(uri) if track else "off",
    }
    summary["gradvar"] = _quick_gradvar(run_dir, track, uri)
    return summary


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
    s = main_job(out_root, steps, is_samples, track=not no_track, uri=tracking_uri)
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
