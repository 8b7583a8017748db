"""Evaluation of a model (test ELBO also in bits per dimension, IWAE bound at K, importance-sampled log-likelihood with
its interval, and the collapse diagnostics: KL per unit, active and borderline units, I(x; z)) and of a run directory
(``vaezoo eval RUN``: its checkpoint on its test set, written as JSON, logged as an MLflow run).

All values in nats per datapoint unless named otherwise. The importance-sampled estimate logsumexp_s(log w_s) - log S has
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
from vaezoo.models.distributions import DiagonalGaussian
from vaezoo.objectives import Objective, ObjectiveConfig
from vaezoo.objectives.log_weights import log_weight
from vaezoo.objectives.reparam import reparameterise
from vaezoo.tracking import ui
from vaezoo.tracking.provenance import provenance, resolve_device
from vaezoo.training.collapse import active_units, aggregate_posterior_mi, bits_per_dim, borderline_units
from vaezoo.training.footprint import Footprint, check_fits
from vaezoo.training.rundir import RunDir, load_run

IWAE_ROWS = 25_600  # decoder rows per batch of the IWAE_k evaluation: max(1, IWAE_ROWS // k) datapoints x k samples
# Rows per chunk of the importance-sampled log-likelihood. CPU: ~2k decoder rows keep activations in cache (a
# 20M-element chunk ran 1.7x slower); GPU: large chunks amortise kernel launches
IS_CHUNK_ROWS = {"cpu": 2048, "cuda": 262_144}
IS_BATCH = 100  # datapoints per batch of the importance-sampled log-likelihood
IS_GROUPS = 10  # replicate groups of the importance samples (the interval's G - 1 = 9 degrees of freedom)
IS_LEVEL = 0.95  # the interval's two-sided level
ESS_THRESHOLD = 10.0  # a point whose weights have fewer effective samples than this rests on a handful of draws
IS_NOTE = ("ll_is is a stochastic lower bound: E[ll_is] = L_S <= log p(x); the interval covers its Monte Carlo spread "
           "(conservatively), not the bias: ll_is - ll_is_s10 shows how much it still rose from S/10 to S draws")


def iwae_batch(k: int) -> int:
    return max(1, IWAE_ROWS // k)


def eval_rows(k: int, is_samples: int, device: torch.device) -> int:
    """The most decoder rows one evaluation batch holds at once (for vaezoo.training.footprint)."""
    rows = iwae_batch(k) * k
    if is_samples > 0:
        rows = max(rows, IS_BATCH, IS_CHUNK_ROWS["cuda" if device.type == "cuda" else "cpu"])
    return rows


def _batches(x: torch.Tensor, batch_size: int):
    for i in range(0, len(x), batch_size):
        yield x[i : i + batch_size]


def sample_blocks(samples: int, groups: int) -> list[int]:
    """Cut points 0 < ... < S of consecutive blocks of the S draws, such that each of the ``groups`` replicate
    groups, each tenth and each half of the draws is a union of whole blocks."""
    cuts = {0, samples}
    for parts in (groups, 10, 2):
        cuts |= {round(i * samples / parts) for i in range(1, parts)}
    return sorted(cuts)


@torch.no_grad()
def log_weight_blocks(model, x, cuts: list[int], generator=None, chunk: int | None = None):
    """Per block of draws (``cuts`` from ``sample_blocks``) and datapoint: logsumexp of log w and of 2 log w,
    each [blocks, B] in float64, drawn in chunks so memory stays bounded whatever S is."""
    q = model.encode(x)
    rows = IS_CHUNK_ROWS["cuda" if x.is_cuda else "cpu"]
    chunk = chunk or max(1, rows // len(x))
    lse, lse2 = [], []
    for a, b in zip(cuts[:-1], cuts[1:]):
        acc = torch.full((2, len(x)), -math.inf, device=x.device, dtype=torch.float64)
        for start in range(a, b, chunk):
            c = min(chunk, b - start)
            eps = torch.randn((c, *q.mu.shape), generator=generator, device=x.device, dtype=q.mu.dtype)
            lw = log_weight(model, x, reparameterise(q, eps), q).total.double()
            acc = torch.logaddexp(acc, torch.stack([torch.logsumexp(lw, 0), torch.logsumexp(2 * lw, 0)]))
        lse.append(acc[0])
        lse2.append(acc[1])
    return torch.stack(lse), torch.stack(lse2)


def _estimates(lse: torch.Tensor, cuts: list[int], parts: int) -> torch.Tensor:
    """[parts, B]: logsumexp(log w) - log n over each of ``parts`` equal runs of the draws (whole blocks)."""
    samples = cuts[-1]
    edges = [round(i * samples / parts) for i in range(parts + 1)]
    rows = []
    for a, b in zip(edges[:-1], edges[1:]):
        inside = [j for j, start in enumerate(cuts[:-1]) if a <= start < b]  # a list index works on any device
        rows.append(torch.logsumexp(lse[inside], 0) - math.log(b - a))
    return torch.stack(rows)


def check_is_settings(samples: int, groups: int = IS_GROUPS, level: float = IS_LEVEL) -> None:
    """Refuse, before any work, settings that leave a replicate group or a tenth of the draws empty."""
    if groups < 2 or samples < max(groups, 10):
        raise VaezooError(f"the importance-sampled log-likelihood needs >= 2 groups and >= max(groups, 10) samples, "
                          f"got {samples} samples in {groups} groups")
    if not 0 < level < 1:
        raise VaezooError(f"the interval's level must be in (0, 1), got {level}")


@torch.no_grad()
def importance_sampled_loglik(model, x, samples: int = 5000, batch_size: int = IS_BATCH, generator=None,
                              groups: int = IS_GROUPS, level: float = IS_LEVEL) -> dict:
    """log p(x) by importance sampling, with an interval that covers its spread, from replicate groups of the draws.

    ``ll_is`` = mean_i [logsumexp_s log w_is - log S] is a stochastic lower bound: its expectation is L_S <= log p(x)
    (Burda et al. 2016). The S draws per point are split into ``groups`` disjoint groups, each giving its own
    estimate of the mean over points from S/G draws. ``ll_is_mc_se`` is the standard deviation of those G estimates,
    and the interval is ll_is +- t(G - 1 dof, ``level``) x that. It is not divided by sqrt(G): with heavy-tailed
    weights the spread shrinks far slower than 1/sqrt(draws) (mnist5k: hardly at all from S = 1,000 to 5,000), while
    more draws never spread the estimate more in any case we measured; so the interval is conservative (up to
    sqrt(G) too wide when the weights are tame, ESS near S) and covers where the delta-method s.e. from the same
    draws (kept as ``ll_is_plugin_se`` for comparison) is 1.4-1.6x too small. ``ll_is_s10`` and ``ll_is_s2`` (the
    estimate from S/10 and S/2 draws, averaged over the disjoint tenths and halves) show whether it has levelled
    off: ll_is - ll_is_s10 is how much it still rose. Per-point effective sample sizes ESS = (sum w)^2 / sum w^2
    (Kong 1992) say how few draws the estimate rests on.
    """
    check_is_settings(samples, groups, level)
    from scipy.stats import t as t_dist  # scipy.stats takes ~1 s to import: only when an interval is made

    cuts = sample_blocks(samples, groups)
    lse_blocks, lse2_blocks = [], []
    for xb in _batches(x, batch_size):
        lse, lse2 = log_weight_blocks(model, xb, cuts, generator)
        lse_blocks.append(lse)
        lse2_blocks.append(lse2)
    lse, lse2 = torch.cat(lse_blocks, 1), torch.cat(lse2_blocks, 1)  # [blocks, N]
    full, full2 = torch.logsumexp(lse, 0), torch.logsumexp(lse2, 0)
    ll = full - math.log(samples)
    group_means = _estimates(lse, cuts, groups).mean(1)  # [G]: each group's estimate of the mean LL
    se = float(group_means.std(unbiased=True))
    half = float(t_dist.ppf(0.5 + level / 2, groups - 1)) * se
    ess = torch.exp(2 * full - full2)  # log ESS = 2 lse(log w) - lse(2 log w)
    ratio = torch.exp(full2 + math.log(samples) - 2 * full)  # plug-in Var(w)/E[w]^2 from the same draws
    plugin = torch.sqrt((ratio - 1).clamp_min(0) / samples)
    value = float(ll.mean())
    return {
        "ll_is": value,
        "ll_is_mc_se": se,
        "ll_is_ci_low": value - half,
        "ll_is_ci_high": value + half,
        "ll_is_ci_level": level,
        "ll_is_groups": groups,
        "ll_is_group_means": [round(float(v), 6) for v in group_means],
        "ll_is_samples": samples,
        "ll_is_s10": float(_estimates(lse, cuts, 10).mean()),
        "ll_is_s2": float(_estimates(lse, cuts, 2).mean()),
        "ll_is_ess_median": float(ess.median()),
        "ll_is_ess_min": float(ess.min()),
        "ll_is_ess_threshold": ESS_THRESHOLD,
        "ll_is_ess_below": float((ess < ESS_THRESHOLD).double().mean()),
        "ll_is_plugin_se": float(torch.sqrt((plugin**2).sum()) / len(plugin)),
        "ll_is_note": IS_NOTE,
        "per_datapoint": ll.float(),
    }


def is_summary(report: dict) -> list[str]:
    """The importance-sampled log-likelihood as ``vaezoo eval`` prints it: value, interval, trend and ESS."""
    if "ll_is" not in report:
        return []
    r, s = report, report["ll_is_samples"]
    return [f"log-likelihood (IS, S = {s}): {r['ll_is']:.3f} nats, {r['ll_is_ci_level']:.0%} interval "
            f"[{r['ll_is_ci_low']:.3f}, {r['ll_is_ci_high']:.3f}] (a stochastic lower bound; the interval is its Monte "
            f"Carlo spread, not its bias)",
            f"  at S/10 = {s // 10}: {r['ll_is_s10']:.3f}, S/2 = {s // 2}: {r['ll_is_s2']:.3f}, S: {r['ll_is']:.3f}; "
            f"ESS median {r['ll_is_ess_median']:.1f}, min {r['ll_is_ess_min']:.1f}, "
            f"{r['ll_is_ess_below']:.0%} of points below {r['ll_is_ess_threshold']:g}"]


@torch.no_grad()
def bound_on(model, x, objective_cfg: ObjectiveConfig, batch_size: int = 250, generator=None) -> float:
    """Mean of a bound over a dataset (batched; estimator choice is irrelevant without gradients)."""
    obj = Objective(objective_cfg)
    total = 0.0
    for xb in _batches(x, batch_size):
        total += float(obj(model, xb, generator).per_datapoint.double().sum())
    return total / len(x)


@torch.no_grad()
def posterior_stats(model, x, batch_size: int = 500, generator=None) -> dict:
    """Collapse diagnostics (``vaezoo.training.collapse``): KL per latent unit (batch mean) and total, active units
    from Cov_x(mu(x)) (E_q[z|x] = mu exactly) with the borderline ones, and I(x; z) under the aggregate posterior
    of the points in ``x`` (drawing one z per point from ``generator``)."""
    mus, sigmas = [], []
    for xb in _batches(x, batch_size):
        q = model.encode(xb)
        mus.append(q.mu.double())
        if model.stochastic:
            sigmas.append(q.sigma.double())
    mu = torch.cat(mus)
    var = mu.var(0, unbiased=True)
    out = {
        "active_units": active_units(var),
        "borderline_units": borderline_units(var),
        "latent_mean_abs_mu": float(mu.abs().mean()),
        "mu_variance_per_unit": [round(float(v), 6) for v in var],
    }
    if sigmas:
        sigma = torch.cat(sigmas)
        if getattr(model, "standard_prior", True):  # per-unit KL is to N(0, I); a mixture prior has none per unit
            kl = DiagonalGaussian(mu, sigma).kl_per_unit().mean(0)
            out["kl"] = float(kl.sum())
            out["kl_per_unit"] = [round(float(v), 6) for v in kl]
        out["mi"] = aggregate_posterior_mi(mu, sigma, generator)
        out["mi_n"] = len(mu)
    return out


def bounds_on_test_set(model, x, k: int, generator: torch.Generator) -> dict:
    """ELBO and IWAE_k of a stochastic model, or the reconstruction term of an autoencoder (nats per
    datapoint), drawing from ``generator`` in this order; training's periodic evaluation reports the same."""
    if not model.stochastic:
        return {"recon": bound_on(model, x, ObjectiveConfig(bound="recon"), generator=generator)}
    return {
        # the closed-form KL where the prior is N(0, I); sampled otherwise (the VampPrior's KL has no closed form)
        "elbo": bound_on(model, x, ObjectiveConfig(bound="elbo", kl="analytic" if getattr(model, "standard_prior", True)
                                                   else "mc"), generator=generator),
        f"iwae_k{k}": bound_on(
            model, x, ObjectiveConfig(bound="iwae", k=k), batch_size=iwae_batch(k), generator=generator
        ),
    }


@torch.no_grad()
def evaluate(model, x, k: int = 64, is_samples: int = 5000, seed: int = 0, batch_size: int = IS_BATCH) -> dict:
    """The evaluation report of one model on one (already binarised) test set."""
    model.eval()
    device = next(model.parameters()).device
    x = x.to(device)
    g = torch.Generator(device=device).manual_seed(seed)
    out: dict = {"n": len(x), **bounds_on_test_set(model, x, k, g)}
    stats = posterior_stats(model, x, generator=g)
    if model.stochastic:
        if "kl" in stats:
            out["recon"] = out["elbo"] + stats["kl"]  # E_q[log p(x|z)] = ELBO + KL (analytic KL)
        out["elbo_bits_per_dim"] = bits_per_dim(out["elbo"], x[0].numel())
    out.update(stats)
    if model.stochastic and is_samples > 0:
        ll = importance_sampled_loglik(model, x, is_samples, batch_size, g)
        out.update({k2: v for k2, v in ll.items() if k2 != "per_datapoint"})
    return out


def _check_eval_fits(rd: RunDir, k: int, is_samples: int, device: torch.device) -> None:
    """Refuse, before the checkpoint or the data are loaded, an evaluation the device cannot hold."""
    cfg = rd.read_config().model
    rows = eval_rows(k, is_samples, device)
    need = Footprint.of(cfg).eval_bytes(rows)
    check_fits(need, device, f"evaluating with K {k} ({rows:,} decoder rows at once)", "lower -k")


def evaluate_run(run, *, k=64, is_samples=5000, max_test=None, seed=0, device="cpu", out=None,
                 track=True, tracking_uri=None, samples=False) -> tuple[dict, Path]:
    """``samples``: also the sample-quality metrics (vaezoo.sample_quality) of the model's prior samples."""
    if is_samples:
        check_is_settings(is_samples)
    rd = RunDir(Path(run))
    if max_test is not None and max_test <= 0:
        raise VaezooError(f"--max-test must be > 0, got {max_test}")
    _check_eval_fits(rd, k, is_samples, resolve_device(device))
    model, record = load_run(rd.path, device)
    if track:  # a training run whose process is gone is synced and marked KILLED, not left RUNNING
        from vaezoo.tracking.sync import touch

        touch(rd.path)
    cfg, recorded_hash = record.cfg, record.hash  # the run's own hash, as its checkpoints carry it
    if samples:
        from vaezoo.sample_quality.classifier import entry_for

        entry_for(cfg.data.name)  # a dataset without a shipped classifier is refused before any work
    ds = load_dataset(cfg.data)
    x = eval_binarized(ds.test, cfg.data.binarize)
    if max_test is not None:
        x = x[:max_test]
    t0 = time.perf_counter()
    report = evaluate(model, x, k=k, is_samples=is_samples, seed=seed)
    if samples:
        from vaezoo.sample_quality import sample_quality

        report["sample_quality"] = sample_quality(model, ds, seed=seed)
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
    if samples:
        sq = report["sample_quality"]
        tracker.log_metrics({f"sample_{m}{end}": sq[m][key] for m in ("frechet", "precision", "recall")
                             for end, key in (("", "mean"), ("_lo", "lo"), ("_hi", "hi"))}, 0)
    tracker.log_artifact(path)
    tracker.end()
    return report, path
