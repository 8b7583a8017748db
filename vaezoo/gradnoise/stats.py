"""Pure statistics of gradient draws: covariance traces, signal-to-noise ratios, the simple noise scale,
the latent/data split of the variance, log-log slopes, and the bootstrap that puts intervals on them all.

A "draw" is one gradient vector (a row of a [n, P] matrix). Every statistic can be recomputed for any
reweighting of the rows: a bootstrap replicate is a row of resampling counts [n_boot, n], so intervals
come from the same code as point estimates (counts = ones). Traces and norms use the centred Gram
matrix, so n x n numbers stand in for n x P ones. Formulas: shared/FORMULAS.md, "Gradient noise".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

COL_CHUNK = 1 << 16  # columns per float64 pass: bounds the temporary memory whatever P is


def bootstrap_counts(n: int, n_boot: int, generator: torch.Generator) -> torch.Tensor:
    """Resampling counts [n_boot, n] (float64): how often each of n draws appears in each replicate."""
    idx = torch.randint(n, (n_boot, n), generator=generator)
    counts = torch.zeros(n_boot, n, dtype=torch.float64)
    counts.scatter_add_(1, idx, torch.ones(n_boot, n, dtype=torch.float64))
    return counts


def _weights(n: int, counts: torch.Tensor | None) -> torch.Tensor:
    return torch.ones(1, n, dtype=torch.float64) if counts is None else counts.to(torch.float64)


def percentile_ci(reps: torch.Tensor, level: float = 0.95, point: float | None = None) -> tuple[float, float]:
    """Bootstrap interval from replicates, ignoring NaN ones (an infinite replicate counts: a noise scale is
    +inf where noise swamps the signal); (nan, nan) with fewer than two replicates.

    With ``point``, Efron's bias-corrected percentile interval: the quantile levels move by how far the
    replicates sit off the point estimate (z0 = Phi^-1(share of replicates below it)). Replicates of
    statistics that are nonlinear in the draws (ratios such as B_simple, the log-log slopes) can sit off
    the point; plain percentiles then miss. The SNR replicates are re-centred on their point by
    ``snr_statistics``, so for them z0 is ~0 and the correction does next to nothing.
    """
    r = reps.double().flatten()
    r = r[~torch.isnan(r)]
    n = r.numel()
    if n < 2:
        return math.nan, math.nan
    a_lo, a_hi = (1 - level) / 2, 1 - (1 - level) / 2
    if point is not None and not math.isnan(point):
        share = (float((r < point).sum()) + 0.5 * float((r == point).sum())) / n
        z0 = torch.special.ndtri(torch.tensor(min(max(share, 1 / n), 1 - 1 / n), dtype=torch.float64))
        a_lo = float(torch.special.ndtr(2 * z0 + torch.special.ndtri(torch.tensor(a_lo, dtype=torch.float64))))
        a_hi = float(torch.special.ndtr(2 * z0 + torch.special.ndtri(torch.tensor(a_hi, dtype=torch.float64))))
    # order statistics, not interpolation: interpolating towards an infinite replicate gives NaN
    lo = torch.quantile(r, a_lo, interpolation="lower")
    hi = torch.quantile(r, a_hi, interpolation="higher")
    return float(lo), float(hi)


def figure(point: float, reps: torch.Tensor, level: float = 0.95) -> dict[str, float]:
    """A point estimate and its bias-corrected interval as {"value", "lo", "hi"}: the form every report
    and analysis figure takes (lo, hi nan without replicates)."""
    lo, hi = percentile_ci(reps, level, point)
    return {"value": point, "lo": lo, "hi": hi}


def weighted_mean(values: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of per-draw scalars [n] under each row of counts -> [n_boot] (or [1])."""
    w = _weights(values.numel(), counts)
    return (w @ values.double().cpu()) / w.sum(1)


@dataclass
class RowMoments:
    """Sufficient statistics of n row vectors v_r for any reweighting: with m their mean and c_r = v_r - m,
    ``mean_sq`` = |m|^2, ``cross`` = c_r . m [n] and ``gram`` = c_r . c_s [n, n] (all float64, on CPU)."""

    n: int
    mean_sq: float
    cross: torch.Tensor
    gram: torch.Tensor

    @classmethod
    def of(cls, rows: torch.Tensor) -> RowMoments:
        """From rows [n, P] on any device, in column chunks. Centring first keeps float32 products exact
        enough (what is summed is the spread, not the mean); the sums over chunks are float64."""
        n = rows.shape[0]
        gram = torch.zeros(n, n, dtype=torch.float64, device=rows.device)
        cross = torch.zeros(n, dtype=torch.float64, device=rows.device)
        mean_sq = torch.zeros((), dtype=torch.float64, device=rows.device)
        for j in range(0, rows.shape[1], COL_CHUNK):
            block = rows[:, j : j + COL_CHUNK].float()
            m = block.mean(0)
            c = block - m
            gram += (c @ c.T).double()
            cross += (c @ m).double()
            mean_sq += m.double().square().sum()
        return cls(n, float(mean_sq), cross.cpu(), gram.cpu())

    def sq_norms(self) -> torch.Tensor:
        """|v_r|^2 for each row [n]."""
        return torch.diagonal(self.gram) + 2 * self.cross + self.mean_sq

    def weighted(self, counts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(|weighted mean|^2, trace of the weighted sample covariance, divisor s - 1), each [n_boot] (or [1])."""
        w = _weights(self.n, counts)
        s = w.sum(1)
        centred_mean_sq = ((w @ self.gram) * w).sum(1) / s**2
        mean_sq = self.mean_sq + 2 * (w @ self.cross) / s + centred_mean_sq
        trace = (w @ torch.diagonal(self.gram) - s * centred_mean_sq) / (s - 1)
        return mean_sq, trace


def draw_statistics(moments: RowMoments, counts: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per replicate: ``trace_cov`` = tr Cov[g]; ``grad_sq`` = |E g|^2, unbiased (|mean|^2 - tr/n);
    ``mean_grad_norm`` = its square root (0 where noise swamps it); ``mean_sq_norm`` = E|g|^2."""
    mean_sq, trace = moments.weighted(counts)
    s = _weights(moments.n, counts).sum(1)
    grad_sq = mean_sq - trace / s
    if counts is not None:
        trace, grad_sq = _recentre(moments.weighted(None), moments.n, trace, grad_sq)
    return {
        "trace_cov": trace,
        "grad_sq": grad_sq,
        "mean_grad_norm": grad_sq.clamp_min(0).sqrt(),
        "mean_sq_norm": weighted_mean(moments.sq_norms(), counts),
    }


def snr_per_parameter(rows: torch.Tensor) -> torch.Tensor:
    """Rainforth et al. 2018: |mean| / std (ddof 1) of each column of rows [n, P]; nan where std is 0."""
    return _snr_columns(rows, torch.ones(1, rows.shape[0]), 0, rows.shape[1])[0]


def _snr_columns(rows: torch.Tensor, w: torch.Tensor, j0: int, j1: int) -> torch.Tensor:
    """Per-column SNR of rows[:, j0:j1] under each weight row of w [b, n] -> [b, j1 - j0] (float32)."""
    block = rows[:, j0:j1].float()
    m = block.mean(0)
    c = block - m  # centred once per chunk, so float32 sums of squares keep their precision
    w = w.to(rows.device, torch.float32)
    s = w.sum(1, keepdim=True)
    m1 = (w @ c).div_(s)
    var = (w @ c.square_()).div_(s).sub_(m1.square()).mul_(s / (s - 1))
    snr = m1.add_(m).abs_().div_(var.sqrt())
    return snr.masked_fill_(~(var > 0), torch.nan)


def _snr_summaries(rows: torch.Tensor, w: torch.Tensor, max_floats: int) -> tuple[torch.Tensor, torch.Tensor]:
    n, P = rows.shape
    per_pass = max(1, min(w.shape[0], max_floats // P))
    means, medians = [], []
    for i in range(0, w.shape[0], per_pass):
        wp = w[i : i + per_pass]
        snr = torch.empty(wp.shape[0], P, device=rows.device)
        for j in range(0, P, COL_CHUNK):
            snr[:, j : j + COL_CHUNK] = _snr_columns(rows, wp, j, min(j + COL_CHUNK, P))
        means.append(snr.nanmean(1).double().cpu())
        medians.append(snr.nanmedian(1).values.double().cpu())
    return torch.cat(means), torch.cat(medians)


def snr_statistics(
    rows: torch.Tensor, counts: torch.Tensor | None = None, columns: torch.Tensor | None = None, max_floats: int = 2**26
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """(point, replicates) of ``snr_mean`` and ``snr_median``, the mean and median over parameters of the
    per-parameter SNR: point [1]; replicates [n_boot], None without counts. Each column chunk is centred
    once for all the replicates of a pass.

    Replicates are shifted so that their median is the all-parameter point estimate: resampling the draws
    adds its own noise to each |mean|, an upward bias that near SNR ~ 1/sqrt(R) dwarfs the replicates'
    spread and would put all of them on one side of the point. What they carry is that spread.
    ``columns``: compute the replicates on these parameters only (cost ~ n_boot x len(columns)); where the
    parameters' gradients move together across draws, as a network's do, the subset's spread is the full one.
    """
    point_mean, point_median = _snr_summaries(rows, _weights(rows.shape[0], None), max_floats)
    point = {"snr_mean": point_mean, "snr_median": point_median}
    if counts is None:
        return point, None
    rep_mean, rep_median = _snr_summaries(rows if columns is None else rows[:, columns], counts, max_floats)
    reps = {
        "snr_mean": rep_mean - rep_mean.nanmedian() + point_mean,
        "snr_median": rep_median - rep_median.nanmedian() + point_median,
    }
    return point, reps


def snr_median_of_means(rows: torch.Tensor, groups: int) -> torch.Tensor:
    """A per-parameter SNR that rare huge draws cannot move, as the median over parameters [1] (to set beside
    ``snr_median``): the draws [n, P] in ``groups`` equal consecutive groups (independent draws, so any split is
    a random one), |median of the group means| / sqrt(median of the group variances). The median over
    parameters, not the mean: a parameter whose gradient is zero in most draws (a mostly dead unit) has a
    median group variance near 0 and an unbounded ratio. Where the draws are Gaussian it equals the SNR; where
    their shape changes with K (heavy tails at small K) its slope differs from the plain SNR's, and that
    difference is the tails' share of the slope."""
    n, P = rows.shape
    if groups < 2 or n % groups or n // groups < 2:
        raise ValueError(f"median of means needs >= 2 groups of >= 2 draws dividing {n}, got {groups} groups")
    out = torch.empty(P)
    for j in range(0, P, COL_CHUNK):
        block = rows[:, j : j + COL_CHUNK].float().reshape(groups, n // groups, -1)
        centre = block.mean(1).median(0).values.abs()
        spread = block.var(1).median(0).values.sqrt()
        out[j : j + block.shape[2]] = (centre / spread).masked_fill(~(spread > 0), torch.nan).cpu()
    return out.nanmedian().double().reshape(1)


def zero_variance_count(rows: torch.Tensor) -> int:
    """Parameters whose gradient never varies across the draws (e.g. dead ReLU units): left out of SNR summaries."""
    return int((rows.amax(0) == rows.amin(0)).sum())


def within_group_trace(groups: torch.Tensor) -> torch.Tensor:
    """tr of the sample covariance (ddof 1) within each group of draws [M, J, P] -> [M] (float64).
    With the minibatch held fixed inside a group and only z redrawn, its mean is the latent part of Var[g]."""
    c = groups - groups.mean(1, keepdim=True)
    return c.square().sum((1, 2)).double().cpu() / (groups.shape[1] - 1)


def between_trace(total: torch.Tensor, total_sq: float, n: int) -> float:
    """tr of the sample covariance of n vectors from their sum [P] and the sum of their squared norms."""
    return (total_sq - float(total.double().square().sum()) / n) / (n - 1)


def noise_ratio(trace: torch.Tensor, grad_sq: torch.Tensor) -> torch.Tensor:
    """B_simple = tr Sigma / |G|^2, +inf where the estimate of |G|^2 is not positive (noise swamps the signal)."""
    return torch.where(grad_sq > 0, trace / grad_sq, torch.full_like(trace, math.inf))


def noise_scale_pooled(
    group_moments: RowMoments, group_sq: torch.Tensor, group_size: int, counts: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """McCandlish et al. 2018 from per-example gradients, pooled in equal groups (the bootstrap resamples groups).

    group_moments: RowMoments of the group means; group_sq [G]: sum of |g_i|^2 within each group.
    Per replicate: ``trace_sigma`` = tr Sigma (per example, ddof 1), ``grad_sq`` = |G|^2 (unbiased),
    ``b_simple`` = tr Sigma / |G|^2.
    """
    def unbiased(counts):
        w = _weights(group_moments.n, counts)
        mean_sq, _ = group_moments.weighted(counts)
        N = group_size * w.sum(1)
        trace = (w @ group_sq.double() - N * mean_sq) / (N - 1)
        return mean_sq, trace, mean_sq - trace / N

    _, trace, grad_sq = unbiased(counts)
    if counts is not None:
        mean_sq0, trace0, _ = unbiased(None)
        trace, grad_sq = _recentre((mean_sq0, trace0), group_size * group_moments.n, trace, grad_sq)
    return {"trace_sigma": trace, "grad_sq": grad_sq, "b_simple": noise_ratio(trace, grad_sq)}


def _recentre(
    sample: tuple[torch.Tensor, torch.Tensor], n: int, trace_reps: torch.Tensor, grad_sq_reps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bootstrap replicates of tr Cov and of the unbiased |E g|^2 = |mean|^2 - tr/n, moved from the
    bootstrap world's truths onto the sample's estimates (the pivot theta* - theta(F_hat) stands for
    theta_hat - theta).

    In the bootstrap world the mean is the sample mean, so its |E g|^2 is |mean|^2, which exceeds the
    estimate by tr/n, and its covariance is the sample's with divisor n. Uncorrected, every replicate of a
    ratio such as B_simple = tr / |E g|^2 sat below the point wherever tr/n is not small against |E g|^2,
    and the percentile interval missed its own point (issue 15: "B_simple 260 [253, 255]"); the coverage
    test in tests/test_gradvar.py measures the interval against a known truth.
    """
    mean_sq, trace = (float(t.flatten()[0]) for t in sample)
    world_grad_sq = mean_sq
    world_trace = trace * (n - 1) / n
    point_grad_sq = mean_sq - trace / n
    return trace_reps - world_trace + trace, grad_sq_reps - world_grad_sq + point_grad_sq


def noise_scale_two_batch(
    sq_small: torch.Tensor, b_small: int, sq_big: torch.Tensor, b_big: int
) -> dict[str, torch.Tensor]:
    """McCandlish et al. 2018, App. A: from E|G_B|^2 = |G|^2 + tr(Sigma)/B at two batch sizes.

    sq_small, sq_big: mean squared norms of minibatch gradients (any shape, e.g. bootstrap replicates).
    """
    if not b_small < b_big:
        raise ValueError(f"two-batch estimator needs b_small < b_big, got {b_small}, {b_big}")
    grad_sq = (b_big * sq_big - b_small * sq_small) / (b_big - b_small)
    trace = (sq_small - sq_big) / (1 / b_small - 1 / b_big)
    return {"trace_sigma": trace, "grad_sq": grad_sq, "b_simple": noise_ratio(trace, grad_sq)}


def loglog_slope(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares (slope, intercept) of log y on log x along the last dim; nan where any y <= 0 or is not finite."""
    lx = torch.as_tensor(x, dtype=torch.float64).log()
    y = torch.as_tensor(y, dtype=torch.float64)
    ok = (torch.isfinite(y) & (y > 0)).all(-1)
    ly = torch.where(y > 0, y, torch.ones_like(y)).log()
    dx = lx - lx.mean()
    slope = ((ly - ly.mean(-1, keepdim=True)) * dx).sum(-1) / dx.square().sum()
    intercept = ly.mean(-1) - slope * lx.mean()
    nan = torch.full_like(slope, torch.nan)
    return torch.where(ok, slope, nan), torch.where(ok, intercept, nan)


@dataclass
class LogLogFit:
    """y ~ exp(intercept) x^slope; [lo, hi] the bias-corrected bootstrap interval of the slope."""

    slope: float
    intercept: float
    lo: float
    hi: float
    points: int

    def contains(self, value: float) -> bool:
        return self.lo <= value <= self.hi


def fit_loglog(x, y, y_reps: torch.Tensor | None = None, level: float = 0.95) -> LogLogFit:
    """Slope of log y on log x; the interval refits each bootstrap replicate (y_reps [n_boot, n], one
    independent resample per point), so it carries the points' own uncertainty into the slope."""
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.numel() < 2 or len(set(x.tolist())) < 2:
        raise ValueError("a slope needs at least two distinct x values")
    slope, intercept = loglog_slope(x, torch.as_tensor(y, dtype=torch.float64))
    lo, hi = (
        percentile_ci(loglog_slope(x, y_reps)[0], level, float(slope)) if y_reps is not None else (math.nan, math.nan)
    )
    return LogLogFit(float(slope), float(intercept), lo, hi, int(x.numel()))
