"""What a study's cells add up to: log-log slopes with intervals (and what theory expects of them), the
two estimates of the simple noise scale, and the equal-compute comparison of B x K splits.

Expected slopes: tr Cov[g] ~ 1/B (independent examples); the K-sample ELBO's latent part ~ 1/K; IWAE with
the reparameterised estimator (Rainforth et al. 2018): encoder SNR ~ K^-1/2, decoder SNR ~ K^+1/2; DReG's
encoder SNR does not fall with K (Tucker et al. 2019). The SNR slopes are asymptotic in K and hold for
the latent noise; the data noise (which K does not touch) flattens them at large K.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from vaezoo.gradnoise import stats
from vaezoo.gradnoise.measure import MODEL, CellResult, Study
from vaezoo.gradnoise.pergrad import NETWORKS


@dataclass
class Fit:
    name: str
    bound: str
    estimator: str
    network: str
    statistic: str
    axis: str  # "B" or "K"
    fixed: int  # the other axis' value
    xs: list[int]
    slope: float
    lo: float
    hi: float
    expected: float | None
    expectation: str

    @property
    def agrees(self) -> bool | None:
        """Whether the interval holds the expected slope (None where theory makes no point claim, or where the
        fit has no interval)."""
        if self.lo != self.lo:
            return None
        if self.expected is not None:
            return self.lo <= self.expected <= self.hi
        if self.expectation.startswith("not falling"):
            return self.hi >= 0
        return None


def _snr_expectation(bound: str, est: str, net: str) -> tuple[float | None, str]:
    if bound == "iwae" and net == "decoder":
        return 0.5, "Rainforth et al. 2018: decoder SNR ~ sqrt(K)"
    if bound == "iwae" and est == "reparam" and net == "encoder":
        return -0.5, "Rainforth et al. 2018: encoder SNR ~ 1/sqrt(K)"
    if bound == "iwae" and est == "dreg" and net == "encoder":
        return None, "not falling (Tucker et al. 2019)"
    return None, ""


# (fit name, axis, statistic, networks, expectation(bound, estimator, network))
FIT_SPECS = [
    ("variance_vs_B", "B", "trace_cov", (*NETWORKS, MODEL), lambda b, e, n: (-1.0, "independent examples: 1/B")),
    (
        "latent_vs_K",
        "K",
        "latent_var",
        (*NETWORKS, MODEL),
        lambda b, e, n: (-1.0, "K-sample ELBO: latent noise / K") if b == "elbo" else (None, ""),
    ),
    ("snr_mean_vs_K", "K", "snr_mean", NETWORKS, _snr_expectation),
    ("snr_median_vs_K", "K", "snr_median", NETWORKS, _snr_expectation),
    ("snr_mom_vs_K", "K", "snr_mom", NETWORKS, _snr_expectation),  # only where the draws were asked for it
]


def sweep(study: Study, bound: str, estimator: str, axis: str) -> list[CellResult]:
    """The cells of one (bound, estimator) along B (at K = min K) or along K (at the K-sweep batch size)."""
    cfg = study.cfg
    fixed = cfg.k_base if axis == "B" else k_sweep_batch(study)
    keep = [
        c
        for c in study.cells
        if c.cell.bound == bound and c.cell.estimator == estimator and (c.cell.K if axis == "B" else c.cell.B) == fixed
    ]
    return sorted(keep, key=lambda c: c.cell.B if axis == "B" else c.cell.K)


def k_sweep_batch(study: Study) -> int:
    cfg = study.cfg
    if cfg.design == "cross" or cfg.k_sweep_batch in cfg.batch_sizes:
        return cfg.k_sweep_batch
    return cfg.batch_sizes[-1]


def _stack_reps(cells: list[CellResult], net: str, name: str) -> torch.Tensor | None:
    reps = [c.reps[net][name] for c in cells]
    if any(r.numel() == 0 for r in reps):
        return None
    return torch.stack(reps, 1)


def fit_sweep(cells: list[CellResult], axis: str, net: str, name: str) -> stats.LogLogFit | None:
    """Log-log fit of one statistic along a sweep; None with fewer than two points."""
    if len(cells) < 2 or name not in cells[0].point.get(net, {}):
        return None
    xs = [c.cell.B if axis == "B" else c.cell.K for c in cells]
    ys = [c.point[net][name] for c in cells]
    return stats.fit_loglog(xs, ys, _stack_reps(cells, net, name))


def fits(study: Study) -> list[Fit]:
    out = []
    for bound, est in study.cfg.combos():
        for name, axis, statistic, nets, expect in FIT_SPECS:
            cells = sweep(study, bound, est, axis)
            for net in nets:
                f = fit_sweep(cells, axis, net, statistic)
                if f is None:
                    continue
                expected, why = expect(bound, est, net)
                fixed = study.cfg.k_base if axis == "B" else k_sweep_batch(study)
                xs = [c.cell.B if axis == "B" else c.cell.K for c in cells]
                out.append(Fit(name, bound, est, net, statistic, axis, fixed, xs, f.slope, f.lo, f.hi, expected, why))
    return out


def two_batch(study: Study) -> list[dict]:
    """B_simple from mean squared minibatch-gradient norms at (B_small, B_big), K = min K."""
    pair = study.cfg.two_batch_pair()
    out = []
    if pair is None:
        return out
    for bound, est in study.cfg.combos():
        cells = {c.cell.B: c for c in sweep(study, bound, est, "B")}
        if pair[0] not in cells or pair[1] not in cells:
            continue
        small, big = cells[pair[0]], cells[pair[1]]
        row = {
            "bound": bound,
            "estimator": est,
            "K": study.cfg.k_base,
            "b_small": pair[0],
            "b_big": pair[1],
            "networks": {},
        }
        for net in (*NETWORKS, MODEL):
            point = stats.noise_scale_two_batch(
                torch.tensor(small.point[net]["mean_sq_norm"]),
                pair[0],
                torch.tensor(big.point[net]["mean_sq_norm"]),
                pair[1],
            )
            reps = stats.noise_scale_two_batch(
                small.reps[net]["mean_sq_norm"], pair[0], big.reps[net]["mean_sq_norm"], pair[1]
            )
            row["networks"][net] = {k: stats.figure(float(point[k]), reps[k]) for k in point}
        out.append(row)
    return out


def pooled(study: Study) -> list[dict]:
    """B_simple from per-example gradients; McCandlish et al. 2018 read it as the critical batch size."""
    out = []
    for p in study.pools:
        row = {"bound": p.bound, "estimator": p.estimator, "K": p.K, "N": p.info["N"], "networks": p.figures()}
        row["critical_batch"] = row["networks"][MODEL]["b_simple"]
        out.append(row)
    return out


def equal_compute(study: Study, net: str = MODEL) -> list[dict]:
    """At each budget B x K reached by two or more cells: the cells and the split with the lowest tr Cov."""
    out = []
    for bound, est in study.cfg.combos():
        by_budget: dict[int, list[CellResult]] = {}
        for c in study.cells:
            if c.cell.bound == bound and c.cell.estimator == est:
                by_budget.setdefault(c.cell.B * c.cell.K, []).append(c)
        for budget, cells in sorted(by_budget.items()):
            if len(cells) < 2:
                continue
            rows = [
                {"B": c.cell.B, "K": c.cell.K, **c.figure(net, "trace_cov")}
                for c in sorted(cells, key=lambda c: c.cell.B)
            ]
            best = min(rows, key=lambda r: r["value"])
            out.append(
                {
                    "bound": bound,
                    "estimator": est,
                    "network": net,
                    "budget": budget,
                    "cells": rows,
                    "best": {"B": best["B"], "K": best["K"]},
                }
            )
    return out


def split_at(study: Study, bound: str, est: str, B: int, K: int) -> dict | None:
    """The data/latent split of one cell, per network, with intervals."""
    for c in study.cells:
        if (c.cell.bound, c.cell.estimator, c.cell.B, c.cell.K) == (bound, est, B, K) and "latent_var" in c.point[
            MODEL
        ]:
            return {
                net: {k: c.figure(net, k) for k in ("trace_cov", "data_var", "latent_var", "latent_fraction")}
                for net in (*NETWORKS, MODEL)
            }
    return None


@dataclass
class Analysis:
    fits: list[Fit]
    two_batch: list[dict]
    pooled: list[dict]
    equal_compute: list[dict]

    def to_dict(self) -> dict:
        return {
            "fits": [{**asdict(f), "agrees": f.agrees} for f in self.fits],
            "noise_scale_two_batch": self.two_batch,
            "noise_scale_per_example": self.pooled,
            "equal_compute": self.equal_compute,
        }

    def fit(self, name: str, bound: str, estimator: str, network: str) -> Fit | None:
        for f in self.fits:
            if (f.name, f.bound, f.estimator, f.network) == (name, bound, estimator, network):
                return f
        return None


def analyse(study: Study) -> Analysis:
    return Analysis(fits(study), two_batch(study), pooled(study), equal_compute(study))
