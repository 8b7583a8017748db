"""``vaezoo bench gradvar``: gradient variance and SNR versus batch size B, samples per z K, bound and
estimator, per network, for a model at initialisation, after N training steps, or loaded from a run.

Writes into --out: gradvar.json (everything), cells.csv (tidy), summary.md (fitted slopes and headline
figures), variance_vs_B.png, snr_vs_K.png, decomposition_<bound>_<estimator>.png, noise_scale.png; all
are artifacts of one MLflow run whose metrics are every cell's figures. ``--quick`` is the small version
that ``make bench`` runs on the reference VAE it has just trained. The study itself: vaezoo.gradnoise.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import click
import torch

from vaezoo.cli.options import comma_ints, comma_list, tracking_options
from vaezoo.core.errors import VaezooError
from vaezoo.core.io import make_dir

# A few minutes on 2 CPU cores for the 1.1M-parameter reference VAE: the figures the issue asks for,
# with fewer draws (wider intervals) and two estimators.
QUICK = {
    "batch_sizes": (1, 4, 16, 64, 256),
    "ks": (1, 4, 16, 64),
    "estimators": ("reparam", "dreg"),
    "k_sweep_batch": 16,
    "draws": 48,
    "pool": 512,
    "pool_groups": 32,
    "bootstrap": 100,
}


@dataclass
class Source:
    """The model to measure, where it came from, and the data its gradients are drawn on."""

    model: torch.nn.Module
    data: torch.Tensor
    binarize: str
    meta: dict


def _user_config(config_file: str | None, sets: tuple[str, ...], dataset: str | None) -> dict:
    from vaezoo.core.configs import apply_sets, merge, read_json_object, set_path
    from vaezoo.training.config import REFERENCE

    user = copy.deepcopy(REFERENCE)
    if config_file:
        user = merge(user, read_json_object(config_file, "config file"))
    if dataset:
        set_path(user, "data.name", dataset)
    apply_sets(user, sets)
    return user


def load_source(
    run_dir: str | None, user: dict | None, train_steps: int, device: str, out: Path, progress: bool = False
) -> Source:
    """A run's checkpoint; or a fresh model from a config (the reference VAE by default), optionally
    trained ``train_steps`` steps by vaezoo.training.loop into ``out/trained`` (the same loop as ``vaezoo train``)."""
    from vaezoo.data import load_dataset
    from vaezoo.tracking.provenance import resolve_device
    from vaezoo.training import RunDir, build, load_run, load_run_model, train
    from vaezoo.training.config import resolve_for_dataset

    dev = resolve_device(device)
    ds = None  # loaded once: the untrained fresh model needs it for build, and every path for the draws
    if run_dir is not None:
        model, record = load_run(run_dir, device)
        cfg = record.cfg
        rd = RunDir(Path(run_dir))
        step = rd.read_final().get("step")
        meta = {
            "kind": "run",
            "run_dir": str(Path(run_dir).resolve()),
            "step": step,
            "config_hash": record.hash,
            "description": f"{cfg.model.name} from run {run_dir} (step {step})",
        }
    else:
        user = user or {}
        cfg = resolve_for_dataset(user)
        cfg = dataclasses.replace(cfg, device=device)
        if train_steps:
            cfg = dataclasses.replace(
                cfg,
                steps=train_steps,
                eval_every=train_steps,
                checkpoint_every=train_steps,
                log_every=min(cfg.log_every, train_steps),
            )
            final = train(cfg, out / "trained", track=False, progress=progress)
            model, _ = load_run_model(out / "trained", device)
            meta = {
                "kind": "trained",
                "steps": train_steps,
                "run_dir": str((out / "trained").resolve()),
                "final": final,
                "description": f"{cfg.model.name} on {cfg.data.name} after {train_steps} training steps (seed {cfg.seed})",
            }
        else:
            ds = load_dataset(cfg.data)
            model = build(cfg, ds, dev)[0]
            meta = {
                "kind": "init",
                "description": f"{cfg.model.name} on {cfg.data.name} at initialisation (seed {cfg.seed})",
            }
        meta.update({"config": cfg.to_dict(), "config_hash": cfg.hash})
    if ds is None:
        ds = load_dataset(cfg.data)
    binarize = cfg.data.binarize
    data_meta = {
        "name": cfg.data.name,
        "n_train": len(ds.train),
        "binarize": binarize,
        "description": f"{cfg.data.name} train split, {len(ds.train)} examples, binarize={binarize}",
    }
    return Source(model, ds.train, binarize, {"source": meta, "data": data_meta, "model": cfg.model.name})


def _run_name(meta: dict) -> str:
    """e.g. ``gradvar-vae-mnist5k-run-1a2b3c4``: the model studied, its data, where it came from, its config hash."""
    src = meta["source"]
    return f"gradvar-{meta['model']}-{meta['data']['name']}-{src['kind']}-{src['config_hash'][:7]}"


def _cell_metrics(study) -> dict[str, float]:
    out = {}
    for c in study.cells:
        for net, figs in c.point.items():
            for name, v in figs.items():
                out[f"{c.cell.label}.{net}.{name}"] = v
    for p in study.pools:
        for net, figs in p.point.items():
            for name, v in figs.items():
                out[f"{p.bound}.{p.estimator}.per_example.K{p.K}.{net}.{name}"] = v
    return out


def _analysis_metrics(analysis) -> dict[str, float]:
    out = {}
    for f in analysis.fits:
        key = f"slope.{f.name}.{f.bound}.{f.estimator}.{f.network}"
        out.update({key: f.slope, key + ".lo": f.lo, key + ".hi": f.hi})
    for row in analysis.two_batch:
        for net, figs in row["networks"].items():
            out[f"{row['bound']}.{row['estimator']}.two_batch.{net}.b_simple"] = figs["b_simple"]["value"]
    return out


def run_gradvar(
    cfg,
    source_fn,
    out: Path,
    device: str = "auto",
    track: bool = True,
    tracking_uri: str | None = None,
    progress: bool = True,
) -> dict:
    """Load the model (``source_fn(out)`` -> Source), run the study, write every output, log one MLflow run."""
    from vaezoo import tracking
    from vaezoo.core.configs import to_dict
    from vaezoo.gradnoise import report
    from vaezoo.gradnoise.analysis import analyse
    from vaezoo.gradnoise.measure import run_study, select_data
    from vaezoo.tracking import ui
    from vaezoo.tracking.provenance import provenance, resolve_device

    dev = resolve_device(device)
    if out.exists() and any(out.iterdir()):
        raise VaezooError(f"output folder '{out}' is not empty; choose another with --out")
    created = not out.exists()
    make_dir(out)
    try:
        source = source_fn(out)
        select_data(cfg, source.data, source.binarize)  # refuse what the data cannot serve before a tracking run is opened
    except VaezooError:
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    tracker = tracking.start(track, f"gradvar-{out.name}", tracking_uri)
    status = "FAILED"
    try:
        tags = provenance(dev, cfg.seed)
        tracker.set_tags({**tags, "vaezoo.kind": "gradvar", "out_dir": str(out.resolve())})
        ui.present(tracker, _run_name(source.meta), "gradvar", tags["git_sha"], entry="vaezoo bench gradvar")
        tracker.log_params(
            tracking.flatten(
                {
                    "gradvar": to_dict(cfg),
                    "source": {k: v for k, v in source.meta["source"].items() if k not in ("config", "final")},
                    "data": source.meta["data"],
                }
            )
        )
        with ui.system_metrics(tracker):
            study = run_study(source.model, source.data, source.binarize, cfg, dev, progress=progress)
        analysis = analyse(study)
        meta = {
            **source.meta,
            "device": f"{dev} ({tags['device_name']})",
            "provenance": tags,
            "mlflow_run_id": tracker.run_id,
        }
        paths, h = report.write_all(study, analysis, meta, out)
        metrics = {k: v for k, v in {**_cell_metrics(study), **_analysis_metrics(analysis)}.items() if math.isfinite(v)}
        tracker.log_metrics(metrics, 0)
        for path in paths.values():
            tracker.log_artifact(path)
        status = "FINISHED"
    finally:
        tracker.end(status)
    return {
        "out": str(out),
        "paths": {k: str(v) for k, v in paths.items()},
        "headline": h,
        "lines": report.headline_lines(h),
        "seconds": study.seconds,
        "mlflow_run_id": tracker.run_id,
    }


def quick_study(run_dir: str | Path, out: str | Path | None = None, track: bool = True, progress: bool = False,
                tracking_uri: str | None = None) -> dict:
    """The ``--quick`` study on a trained run (what ``make bench`` calls after training the reference VAE)."""
    from vaezoo.gradnoise.measure import GradVarConfig

    target = Path(out) if out else Path(run_dir) / "gradvar"
    return run_gradvar(
        GradVarConfig(**QUICK),
        lambda o: load_source(str(run_dir), None, 0, "cpu", o),
        target,
        device="cpu",
        track=track,
        tracking_uri=tracking_uri,
        progress=progress,
    )


@click.command("gradvar")
@click.option(
    "--run", "run_dir", type=click.Path(file_okay=False), help="Measure this run's checkpoint (vaezoo train)."
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="Fresh model: JSON config (TrainConfig layout). [reference VAE, mnist5k]",
)
@click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="Fresh model: any config key, e.g. model.hidden=[64]."
)
@click.option("--dataset", help="Fresh model: dataset (mnist5k | digits | mnist | linear-gaussian | shapes).")
@click.option(
    "--train-steps", type=int, default=0, show_default=True, help="Fresh model: train it this many steps first."
)
@click.option("--batch-sizes", help="B grid, e.g. 1,4,16,64,256,1024.")
@click.option("--ks", help="K grid (samples per z), e.g. 1,4,16,64.")
@click.option("--bounds", help="elbo,iwae.")
@click.option("--estimators", help="reparam,score,stl,dreg (each where it applies to a bound).")
@click.option("--kl", help="auto | analytic | mc (ELBO's KL term). [auto]")
@click.option(
    "--design", help="cross: B sweep at the smallest K and K sweep at --k-sweep-batch; full: every (B, K). [cross]"
)
@click.option("--k-sweep-batch", type=int, help="B of the K sweep. [16]")
@click.option("--draws", "-R", "draws", type=int, help="Independent gradient draws per cell. [200]")
@click.option("--inner", type=int, help="eps redraws per fixed minibatch in the latent/data split. [4]")
@click.option("--no-split", is_flag=True, default=None, help="Skip the latent/data split.")
@click.option("--pool", type=int, help="Per-example gradients for B_simple (0: skip). [2048]")
@click.option("--pool-groups", type=int, help="Groups the pool is bootstrapped by. [64]")
@click.option("--two-batch", help="B_small,B_big of the two-batch noise scale. [smallest,largest B]")
@click.option("--bootstrap", type=int, help="Bootstrap replicates for the intervals (0: none). [200]")
@click.option(
    "--without-replacement", is_flag=True, default=None, help="Minibatches without replacement (B <= dataset size)."
)
@click.option(
    "--data-limit", type=int, help="Use the first N training examples only, each binarised once (1: one fixed x, as in Rainforth et al.)."
)
@click.option("--seed", type=int, help="Seed of the draws. [0]")
@click.option("--chunk-mb", type=int, help="Memory bound of one vmapped chunk of gradients. [256]")
@click.option("--score-baseline", help="The score estimator with the baseline training uses, held at its settled value (trained), or with none (none). [trained]")
@click.option("--method", help="Per-example gradient moments of the B_simple pool: hooks (one backward pass with layer hooks, exact) | vmap (torch.func, for checking). [hooks]")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Output folder (must be new or empty). [runs/gradvar/<source>-<time>]",
)
@click.option("--quick", is_flag=True, help="The small grid make bench runs (explicit options still win).")
@click.option("--no-progress", is_flag=True)
@tracking_options
def gradvar_command(
    run_dir,
    config_file,
    sets,
    dataset,
    train_steps,
    device,
    out_dir,
    quick,
    no_progress,
    no_track,
    tracking_uri,
    **grid,
) -> None:
    """Gradient variance and SNR vs batch size, samples per z and estimator, per network."""
    from vaezoo.core.configs import from_dict
    from vaezoo.gradnoise.measure import GradVarConfig

    if run_dir is not None and (config_file or sets or dataset or train_steps):
        raise VaezooError(
            "--run measures that run's model; --config, --set, --dataset and --train-steps are for a fresh model"
        )
    if train_steps < 0:
        raise VaezooError(f"--train-steps must be >= 0, got {train_steps}")
    values = dict(QUICK) if quick else {}
    parsed = {
        "batch_sizes": comma_ints(grid["batch_sizes"], "--batch-sizes"),
        "ks": comma_ints(grid["ks"], "--ks"),
        "bounds": comma_list(grid["bounds"], "--bounds"),
        "estimators": comma_list(grid["estimators"], "--estimators"),
        "kl": grid["kl"],
        "design": grid["design"],
        "k_sweep_batch": grid["k_sweep_batch"],
        "draws": grid["draws"],
        "inner": grid["inner"],
        "split": False if grid["no_split"] else None,
        "pool": grid["pool"],
        "pool_groups": grid["pool_groups"],
        "two_batch": comma_ints(grid["two_batch"], "--two-batch"),
        "bootstrap": grid["bootstrap"],
        "replacement": False if grid["without_replacement"] else None,
        "data_limit": grid["data_limit"],
        "seed": grid["seed"],
        "chunk_mb": grid["chunk_mb"],
        "method": grid["method"],
        "score_baseline": grid["score_baseline"],
    }
    values.update({k: v for k, v in parsed.items() if v is not None})
    cfg = from_dict(GradVarConfig, values)  # validates the grid before any model or data is loaded
    user = None if run_dir else _user_config(config_file, sets, dataset)
    if out_dir:
        out = Path(out_dir)
    else:
        tag = (
            Path(run_dir).name
            if run_dir
            else f"{user['model'].get('name', 'vae')}-{user['data']['name']}-"
            + (f"step{train_steps}" if train_steps else "init")
        )
        out = Path("runs/gradvar") / f"{tag}-{time.strftime('%Y%m%d-%H%M%S')}"
    summary = run_gradvar(
        cfg,
        lambda o: load_source(run_dir, user, train_steps, device, o, progress=not no_progress),
        out,
        device=device,
        track=not no_track,
        tracking_uri=tracking_uri,
        progress=not no_progress,
    )
    click.echo(f"\n== vaezoo gradvar: {summary['seconds']:.0f} s ==")
    for line in summary["lines"]:
        click.echo(line)
    click.echo(f"outputs: {summary['out']} (summary.md, gradvar.json, cells.csv, *.png)")
    if summary["mlflow_run_id"]:
        click.echo(f"MLflow run: {summary['mlflow_run_id']}")
