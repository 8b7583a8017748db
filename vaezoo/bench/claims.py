"""``vaezoo bench claims``: the tutorial's claims about autoencoders and VAEs, each made a measured number.

- "KL pulls mu -> 0 and sigma -> 1": per-unit mean mu(x)^2 and mean sigma(x), for beta = 0, 1 and beta >> 1.
- "beta >> 1 collapses the posterior": KL and active units (Burda's Cov_x(mu) > 0.01) against beta.
The gradient claims (one z-sample per x is enough; batch 32-256) are measured by ``vaezoo bench gradvar``.

"AE prior samples are garbage" is the study ``vaezoo study prior-sampling`` (an MMD between the prior and the
codes, validated on controls, over seeds). The dead-zone fraction this command used to print is gone: it
compared prior draws with each model's *own* held-out codes, so codes spread as N(0, 21 I) scored 0.000 and the
beta = 0 VAE scored better than the beta = 1 VAE.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import torch

from vaezoo.cli.options import tracking_options
from vaezoo.core.errors import VaezooError
from vaezoo.core.io import atomic_write_text, make_dir

VARIANTS = {  # label -> (model name, objective overrides)
    "ae": ("ae", {}),
    "vae beta=0": ("vae", {"beta": 0.0}),
    "vae beta=1": ("vae", {"beta": 1.0}),
    "vae beta=8": ("vae", {"beta": 8.0}),
    "vae beta=50": ("vae", {"beta": 50.0}),
}


@torch.no_grad()
def measure(model, x_test: torch.Tensor) -> dict:
    from vaezoo.training.evaluate import posterior_stats

    stats = posterior_stats(model, x_test)
    out = {"active_units": stats["active_units"]}
    q = model.encode(x_test)
    out["mean_mu_squared"] = float(q.mu.pow(2).mean())
    if model.stochastic:
        out["mean_sigma"] = float(q.sigma.mean())
        out["kl"] = stats["kl"]
    return out


def run_claims(dataset: str, steps: int, seed: int, out_dir: Path, track: bool, tracking_uri: str | None = None) -> dict:
    from vaezoo import tracking
    from vaezoo.data import DATASET_SHAPES, eval_binarized, load_dataset
    from vaezoo.training import load_run_model, train
    from vaezoo.training.config import resolve_config

    if dataset not in DATASET_SHAPES or dataset == "linear-gaussian":
        raise VaezooError(f"claims need an image dataset: mnist5k, digits or mnist, got '{dataset}'")
    configs = {
        label: resolve_config(
            {"model": {"name": name}, "objective": objective, "data": {"name": dataset}, "steps": steps, "seed": seed,
             "eval_every": steps, "checkpoint_every": steps},
            DATASET_SHAPES[dataset],
        )
        for label, (name, objective) in VARIANTS.items()
    }
    # every variant has a Bernoulli decoder on the same dataset, so the same data config: load and binarise once
    data = next(iter(configs.values())).data
    assert all(c.data == data for c in configs.values()), "VARIANTS must share one data config"
    ds = load_dataset(data)
    x_test = eval_binarized(ds.test, data.binarize)
    results = {}
    for label, cfg in configs.items():
        run_dir = out_dir / label.replace(" ", "-").replace("=", "")
        train(cfg, run_dir, track=False, progress=False)
        model, _ = load_run_model(run_dir)
        results[label] = measure(model, x_test)
    summary = {"dataset": dataset, "steps": steps, "seed": seed, "results": results}
    atomic_write_text(out_dir / "claims.json", json.dumps(summary, indent=2))
    atomic_write_text(out_dir / "claims.md", markdown(summary))
    tracker = tracking.start(track, "claims", tracking_uri)
    tracker.log_params({"dataset": dataset, "steps": steps, "seed": seed})
    for i, (label, r) in enumerate(results.items()):
        tracker.log_metrics({f"{label.replace(' ', '_').replace('=', '')}.{k}": v for k, v in r.items()}, i)
    for f in ("claims.json", "claims.md"):
        tracker.log_artifact(out_dir / f)
    tracker.end()
    return summary


def markdown(summary: dict) -> str:
    rows = ["| variant | active units | mean mu^2 | mean sigma | KL (nats) |", "|---|---:|---:|---:|---:|"]
    for label, r in summary["results"].items():
        rows.append(f"| {label} | {r['active_units']} | {r['mean_mu_squared']:.3f} | "
                    f"{r.get('mean_sigma', float('nan')):.3f} | {r.get('kl', float('nan')):.2f} |")
    head = (f"Tutorial claims on {summary['dataset']}, {summary['steps']} steps per model, seed {summary['seed']} (one seed: "
            "no intervals; AE prior samples: `vaezoo study prior-sampling`).\n\n")
    return head + "\n".join(rows) + "\n"


@click.command("claims")
@click.option("--dataset", default="mnist5k", show_default=True)
@click.option("--steps", type=int, default=1500, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", default=None, help="Output folder. [runs/claims-<time>]")
@tracking_options
def claims_command(dataset, steps, seed, out_dir, no_track, tracking_uri) -> None:
    """Measure the tutorial's claims: KL pulling mu->0 and sigma->1, beta>>1 collapse (prior samples: vaezoo study)."""
    if steps <= 0:
        raise VaezooError(f"--steps must be > 0, got {steps}")
    out = Path(out_dir or f"runs/claims-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and any(out.iterdir()):
        raise VaezooError(f"output folder '{out}' already exists and is not empty")
    make_dir(out)
    summary = run_claims(dataset, steps, seed, out, track=not no_track, tracking_uri=tracking_uri)
    click.echo(markdown(summary))
    click.echo(f"written: {out / 'claims.json'}, {out / 'claims.md'}")
