"""Evaluation of a model (test ELBO, IWAE bound at K, importance-sampled log-likelihood, KL per unit, active units) and of a
run directory (``vaezoo eval RUN``: its checkpoint on its test set, written as JSON, logged as an MLflow run).

All values in nats per datapoint. The importance-sampled estimate logsumexp_s(log w_s) - log S has
expectation L_S (a lower bound, tight for large S; S = 5000 as in Burda et al. 2016); it is vectorised
over the batch and streamed over S in chunks, so memory stays bounded whatever S is.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from vaezoo import tracking
from vaezoo.core.configs import save_json
from vaezoo.core.errors import VaezooError
from vaezoo.data.datasets import eval_binarized, load_dataset
from vaezoo.objectives import Objective, ObjectiveConfig
from vaezoo.objectives.log_weights import log_weight
from vaezoo.objectives.reparam import reparameterise
from vaezoo.tracking import ui
from vaezoo.tracking.provenance import provenance
from vaezoo.training.rundir import RunDir, load_run

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016


def _batches(x: torch.Tensor, batch_size: int):
    for i in range(0, len(x), batch_size):
        yield x[i : i + batch_size]


@torch.no_grad()
def log_weight_moments(model, x, samples: int, generator=None, chunk: int | None = None):
    """Per datapoint: (logsumexp_s log w_s, logsumexp_s 2 log w_s) over ``samples`` draws, in chunks."""
    q = model.encode(x)
    # CPU: ~2k decoder rows per chunk keep activations in cache (a 20M-element chunk ran 1.7x slower);
    # GPU: large chunks amortise kernel launches
    rows = 262_144 if x.is_cuda else 2048
    chunk = chunk or max(1, min(samples, rows // len(x)))
    lse = torch.full((len(x),), -math.inf, device=x.device, dtype=torch.float64)
    lse2 = lse.clone()
    done = 0
    while done < samples:
        c = min(chunk, samples - done)
        eps = torch.randn((c, *q.mu.shape), generator=generator, device=x.device, dtype=q.mu.dtype)
        lw = log_weight(model, x, reparameterise(q, eps), q).total.double()
        lse = torch.logaddexp(lse, torch.logsumexp(lw, 0))
        lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * lw, 0))
        done += c
    return lse, lse2


@torch.no_grad()
def importance_sampled_loglik(model, x, samples: int = 5000, batch_size: int = 100, generator=None) -> dict:
    """log p(x) estimate per datapoint, with its Monte Carlo standard error (delta method)."""
    lls, ses = [], []
    for xb in _batches(x, batch_size):
        lse, lse2 = log_weight_moments(model, xb, samples, generator)
        ll = lse - math.log(samples)
        # Var(w)/E[w]^2 estimated from the same draws; se(log mean w) ~ sqrt(that / S)
        ratio = torch.exp(lse2 + math.log(samples) - 2 * lse)
        lls.append(ll)
        ses.append(torch.sqrt((ratio - 1).clamp_min(0) / samples))
    ll, se = torch.cat(lls), torch.cat(ses)
    return {
        "ll_is": float(ll.mean()),
        "ll_is_mc_se": float(torch.sqrt((se**2).sum()) / len(se)),
        "ll_is_samples": samples,
        "per_datapoint": ll.float(),
    }


@torch.no_grad()
def bound_on(model, x, objective_cfg: ObjectiveConfig, batch_size: int = 250, generator=None) -> float:
    """Mean of a bound over a dataset (batched; estimator choice is irrelevant without gradients)."""
    obj = Objective(objective_cfg)
    total = 0.0
    for xb in _batches(x, batch_size):
        total += float(obj(model, xb, generator).per_datapoint.double().sum())
    return total / len(x)


@torch.no_grad()
def posterior_stats(model, x, batch_size: int = 500) -> dict:
    """KL per latent unit (batch mean), total KL, and active units from Cov_x(mu(x)) (E_q[z|x] = mu exactly)."""
    mus, kls = [], []
    for xb in _batches(x, batch_size):
        q = model.encode(xb)
        mus.append(q.mu.double())
        if model.stochastic:
            kls.append(q.kl_per_unit().double())
    mu = torch.cat(mus)
    var = mu.var(0, unbiased=True)
    out = {
        "active_units": int((var > ACTIVE_UNIT_THRESHOLD).sum()),
        "latent_mean_abs_mu": float(mu.abs().mean()),
        "mu_variance_per_unit": [round(float(v), 6) for v in var],
    }
    if kls:
        kl = torch.cat(kls).mean(0)
        out["kl"] = float(kl.sum())
        out["kl_per_unit"] = [round(float(v), 6) for v in kl]
    return out


def bounds_on_test_set(model, x, k: int, generator: torch.Generator) -> dict:
    """ELBO and IWAE_k of a stochastic model, or the reconstruction term of an autoencoder (nats per
    datapoint), drawing from ``generator`` in this order; training's periodic evaluation reports the same."""
    if not model.stochastic:
        return {"recon": bound_on(model, x, ObjectiveConfig(bound="recon"), generator=generator)}
    return {
        "elbo": bound_on(model, x, ObjectiveConfig(bound="elbo", kl="analytic"), generator=generator),
        f"iwae_k{k}": bound_on(
            model, x, ObjectiveConfig(bound="iwae", k=k), batch_size=max(1, 25600 // k), generator=generator
        ),
    }


@torch.no_grad()
def evaluate(model, x, k: int = 64, is_samples: int = 5000, seed: int = 0, batch_size: int = 100) -> dict:
    """The evaluation report of one model on one (already binarised) test set."""
    model.eval()
    device = next(model.parameters()).device
    x = x.to(device)
    g = torch.Generator(device=device).manual_seed(seed)
    out: dict = {"n": len(x), **bounds_on_test_set(model, x, k, g)}
    stats = posterior_stats(model, x)
    if model.stochastic:
        out["recon"] = out["elbo"] + stats["kl"]  # E_q[log p(x|z)] = ELBO + KL (analytic KL)
    out.update(stats)
    if model.stochastic and is_samples > 0:
        ll = importance_sampled_loglik(model, x, is_samples, batch_size, g)
        out.update({k2: v for k2, v in ll.items() if k2 != "per_datapoint"})
    return out


def evaluate_run(run, *, k=64, is_samples=5000, max_test=None, seed=0, device="cpu", out=None,
                 track=True, tracking_uri=None) -> tuple[dict, Path]:
    rd = RunDir(Path(run))
    model, record = load_run(rd.path, device)
    if track:  # a training run whose process is gone is synced and marked KILLED, not left RUNNING
        from vaezoo.tracking.sync import touch

        touch(rd.path)
    cfg, recorded_hash = record.cfg, record.hash  # the run's own hash, as its checkpoints carry it
    ds = load_dataset(cfg.data)
    x = eval_binarized(ds.test, cfg.data.binarize)
    if max_test is not None:
        if max_test <= 0:
            raise VaezooError(f"--max-test must be > 0, got {max_test}")
        x = x[:max_test]
    t0 = time.perf_counter()
    report = evaluate(model, x, k=k, is_samples=is_samples, seed=seed)
    report["eval_seconds"] = round(time.perf_counter() - t0, 2)
    report["config_hash"] = recorded_hash
    report["dataset"] = cfg.data.name
    if ds.truth is not None:  # linear-Gaussian: the exact answer is known
        report["log_px_true"] = float(ds.truth.log_marginal(x).mean())
    path = Path(out) if out else rd.path / "eval.json"
    save_json(path, report)
    tracker = tracking.start(track, f"eval-{rd.path.name}", tracking_uri)
    tracker.log_params({"run_dir": str(rd.path.resolve()), "k": k, "is_samples": is_samples, "seed": seed,
                        "max_test": max_test, "config_hash": recorded_hash})
    tags = provenance(torch.device(device), seed)
    tracker.set_tags({**tags, "vaezoo.train_run_id": rd.read_run().get("mlflow_run_id", "")})
    ui.present(tracker, f"eval-{ui.run_name(cfg.to_dict(), recorded_hash)}", "eval", tags["git_sha"], entry="vaezoo eval")
    tracker.log_metrics({k2: v for k2, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}, 0)
    tracker.log_artifact(path)
    tracker.end()
    return report, path
