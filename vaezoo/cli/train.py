"""``vaezoo train``, ``vaezoo eval`` and ``vaezoo sample``: parse, validate, call ``vaezoo.training``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vaezoo.cli.options import tracking_options
from vaezoo.core.errors import VaezooError
from vaezoo.core.phases import mark

# option name -> config path
TRAIN_OPTIONS = {
    "model": "model.name",
    "backbone": "model.backbone",
    "preset": "model.preset",
    "latent_dim": "model.latent_dim",
    "likelihood": "model.likelihood",
    "dataset": "data.name",
    "binarize": "data.binarize",
    "data_dir": "data.data_dir",
    "bound": "objective.bound",
    "k": "objective.k",
    "m": "objective.m",
    "beta": "objective.beta",
    "estimator": "objective.estimator",
    "kl": "objective.kl",
    "kl_schedule": "objective.schedule.name",
    "warmup_steps": "objective.schedule.warmup_steps",
    "cycle_steps": "objective.schedule.period",
    "cycle_ramp": "objective.schedule.ramp",
    "free_bits": "objective.free_bits",
    "lr": "optim.lr",
    "betas": "optim.betas",
    "eps": "optim.eps",
    "fused": "optim.fused",
    "batch_size": "batch_size",
    "steps": "steps",
    "seed": "seed",
    "device": "device",
    "deterministic": "deterministic",
    "eval_every": "eval_every",
    "checkpoint_every": "checkpoint_every",
    "allow_stl_iwae": "allow_stl_iwae",
}


@click.command()
@click.option("--model", help="Model variant (see `vaezoo models`). [vae]")
@click.option("--backbone", help="mlp | conv | linear. [mlp]")
@click.option("--preset", help="burda: 784-200-200-50 tanh, output bias from the pixel mean.")
@click.option("--latent-dim", type=int)
@click.option("--likelihood", help="bernoulli | gaussian. [bernoulli]")
@click.option("--dataset", help="mnist5k | digits | mnist | linear-gaussian | shapes. [mnist5k]")
@click.option("--binarize", help="auto | dynamic | static | none. [auto]")
@click.option("--data-dir", help="Folder with the MNIST IDX files (dataset mnist).")
@click.option("--bound", help="elbo | iwae | miwae | recon. [the variant's]")
@click.option("-k", "k", type=int, help="Samples per datapoint K. [the variant's]")
@click.option("-m", "m", type=int, help="Outer samples M of the miwae bound (M x K draws). [the variant's]")
@click.option("--beta", type=float, help="Weight of the KL term (ELBO only).")
@click.option("--estimator", help="reparam | score | stl | dreg. [reparam]")
@click.option("--kl", help="auto | analytic | mc. [auto]")
@click.option("--allow-stl-iwae", is_flag=True, default=None,
              help="Train with STL on the IWAE bound although it is biased (Tucker et al. 2019); the run is tagged.")
@click.option("--kl-schedule", help="constant | linear (warm-up, Bowman et al.) | cyclical (Fu et al.). [constant]")
@click.option("--warmup-steps", type=int, help="Linear schedule: steps for beta to rise from 0 to its value.")
@click.option("--cycle-steps", type=int, help="Cyclical schedule: steps per cycle.")
@click.option("--cycle-ramp", type=float, help="Cyclical schedule: fraction of each cycle spent rising. [0.5]")
@click.option("--free-bits", type=float, help="Free bits: floor in nats under each unit's batch-mean KL in the loss. [0]")
@click.option("--lr", type=float, help="Adam's learning rate. [1e-3]")
@click.option("--betas", type=(float, float), default=None, metavar="B1 B2", help="Adam's betas. [0.9 0.999]")
@click.option("--eps", type=float, help="Adam's eps. [1e-8]")
@click.option("--fused/--no-fused", default=None, help="Fused Adam, or torch's default one. [fused]")
@click.option("--batch-size", type=int)
@click.option("--steps", type=int)
@click.option("--epochs", type=int, help="Train for this many epochs (sets --steps).")
@click.option("--seed", type=int)
@click.option("--device", help="auto | cpu | cuda. [auto]")
@click.option("--deterministic", is_flag=True, default=None, help="torch.use_deterministic_algorithms(True).")
@click.option("--eval-every", type=int)
@click.option("--checkpoint-every", type=int)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="JSON config file (TrainConfig layout).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any config key, e.g. model.hidden=[256,128].")
@click.option("--run-dir", type=click.Path(file_okay=False), help="Where the run goes. [runs/<model>-<hash>]")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), help="Continue the run in this directory.")
@click.option("--no-progress", is_flag=True)
@click.option("--tracking-fallback", type=click.Choice(["error", "local"]), default="error", show_default=True,
              help="An unreachable tracking server: stop with an error, or log to the run folder only (a warning) "
                   "and send it later with `vaezoo sync RUN`.")
@click.option("--ddp", is_flag=True, help="Data-parallel over the ranks torchrun starts (implied under torchrun); "
              "--batch-size is the global batch, split evenly. Rank 0 alone writes.")
@tracking_options
def train(config_file, sets, run_dir, resume_dir, epochs, no_progress, tracking_fallback, ddp, no_track, tracking_uri,
          **options) -> None:
    """Train a model; the run directory gets config, checkpoint, metrics.jsonl and final.json."""
    from vaezoo.core.configs import apply_sets, diff, merge, read_json_object, set_path, to_dict
    from vaezoo.training import RunDir
    from vaezoo.training import train as run_training
    from vaezoo.training.config import check_epochs, epochs_to_steps, resolve_for_dataset
    from vaezoo.training.distributed import job, launched

    if epochs is not None:
        check_epochs(epochs)  # before anything is read
    user: dict = read_json_object(config_file, "config file") if config_file else {}
    for name, path in TRAIN_OPTIONS.items():
        value = options.get(name)
        if value is not None:
            set_path(user, path, list(value) if isinstance(value, tuple) else value)  # as JSON has it
    apply_sets(user, sets)
    if resume_dir:
        saved = to_dict(RunDir(Path(resume_dir)).read_config())
        user = merge(saved, user)
        if epochs is not None:
            raise VaezooError("--epochs cannot be changed on --resume")
        changed = diff(saved, user)
        if changed:
            raise VaezooError(f"resume with a different config: {'; '.join(changed)}")
    cfg = resolve_for_dataset(user)
    if epochs is not None:
        from vaezoo.data import train_size

        cfg.steps = epochs_to_steps(epochs, train_size(cfg.data), cfg.batch_size, cfg.data.name)
    target = resume_dir or run_dir or f"runs/{cfg.model.name}-{cfg.data.name}-{cfg.hash[:8]}"
    mark("parsed")
    with job(cfg.batch_size, cfg.device, enabled=ddp or launched()) as world:
        final = run_training(cfg, target, resume=bool(resume_dir), track=not no_track, tracking_uri=tracking_uri,
                             tracking_fallback=tracking_fallback, progress=not no_progress, world=world)
    if world is None or world.writes:
        click.echo(json.dumps(final, indent=2))
        click.echo(f"run directory: {target}")


@click.command("eval")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("-k", "k", type=int, default=64, show_default=True, help="K of the IWAE bound.")
@click.option("--is-samples", type=int, default=5000, show_default=True, help="Samples of the importance-sampled log-likelihood, in 10 replicate groups (0: skip).")
@click.option("--max-test", type=int, default=None, help="Evaluate on the first N test images only.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="JSON output. [RUN/eval.json]")
@click.option("--samples", is_flag=True, help="Also the Fréchet distance and precision/recall of prior samples "
              "against the test images, in the features of vaezoo's shipped digit classifier (not Inception FID).")
@tracking_options
def evaluate_cmd(run, k, is_samples, max_test, seed, device, out, samples, no_track, tracking_uri) -> None:
    """Evaluate a trained run: ELBO (nats, bits/dim), IWAE_k, log-likelihood (IS) with its interval, the
    collapse diagnostics (KL per unit, active and borderline units, I(x; z)) and, with --samples, sample quality."""
    from vaezoo.training.collapse import summary
    from vaezoo.training.evaluate import evaluate_run, is_summary

    if k < 1:
        raise VaezooError(f"-k must be >= 1, got {k}")
    if is_samples < 0 or 0 < is_samples < 10:
        raise VaezooError(f"--is-samples must be 0 (skip) or >= 10 (ten replicate groups), got {is_samples}")
    report, path = evaluate_run(run, k=k, is_samples=is_samples, max_test=max_test, seed=seed, device=device,
                                out=out, track=not no_track, tracking_uri=tracking_uri, samples=samples)
    sq = report.pop("sample_quality", None)
    click.echo(json.dumps({k2: v for k2, v in report.items() if not isinstance(v, list)}, indent=2))
    for line in is_summary(report) + summary(report):
        click.echo(line)
    if sq:
        click.echo(sample_quality_text(sq))
    click.echo(f"written: {path}")


def sample_quality_text(sq: dict) -> str:
    """The sample metrics with their intervals, beside the controls they are read against."""
    held, noise = sq["controls"]["held_out_images"], sq["controls"]["uniform_noise"]
    lines = [
        f"sample quality ({sq['classifier']}, test accuracy {sq['classifier_test_accuracy']:.3f}; {sq['sets']} sets "
        f"of {sq['n']} prior samples; not comparable to Inception FID):",
        f"  {'':10s} {'model, mean [' + format(sq['level'], '.0%') + ' t-interval]':>32s} {'held-out real':>14s} "
        f"{'uniform noise':>14s}",
    ]
    for m, label in (("frechet", "Fréchet"), ("precision", "precision"), ("recall", "recall")):
        d = sq[m]
        model = f"{d['mean']:.3f} [{d['lo']:.3f}, {d['hi']:.3f}]"
        lines.append(f"  {label:10s} {model:>32s} {held[m]:14.3f} {noise[m]:14.3f}")
    return "\n".join(lines)


@click.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("-n", "n", type=int, default=64, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default="grid.png", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def sample(run, n, out, seed) -> None:
    """PNG grid of prior samples, and <out>-recon.png of test reconstructions."""
    from vaezoo.data import eval_binarized, load_dataset
    from vaezoo.training import load_run_model
    from vaezoo.training.samples import write_sample_grids

    model, cfg = load_run_model(run)
    ds = load_dataset(cfg.data)
    paths = write_sample_grids(model, eval_binarized(ds.test, cfg.data.binarize), n, out, seed)
    click.echo("written: " + ", ".join(map(str, paths)))


@click.command("sync")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--tracking-uri", default=None,
              help="Store to sync to. [the run's own, else $MLFLOW_TRACKING_URI, else sqlite in ./mlruns]")
@click.option("--force", is_flag=True, help="Sync a run owned by a process on another host (that process is gone).")
def sync_cmd(run, tracking_uri, force) -> None:
    """Send MLflow what RUN's folder holds and MLflow lacks (metrics, artifacts, the run's end); a run whose
    process is gone is marked KILLED (FINISHED if it finished). Safe to repeat: nothing is sent twice."""
    from vaezoo.tracking.sync import sync_run

    r = sync_run(run, tracking_uri, force=force)
    if r["live"]:
        click.echo(f"{run}: being trained by {r['owner']}, which sends its own metrics; nothing to do")
        return
    made = " (made now)" if r["created"] else ""
    end = f", marked {r['status']}" if r["status"] else ""
    click.echo(f"{run}: MLflow run {r['run_id']}{made} at {r['uri']}: {r['lines_sent']} metric lines sent, "
               f"{r['lines']} in all{end}")


COMMANDS = (train, evaluate_cmd, sample, sync_cmd)
