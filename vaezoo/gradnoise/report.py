"""A study written out: ``gradvar.json`` (everything), ``cells.csv`` (tidy: one row per cell, network and
statistic), PNG plots and ``summary.md`` with the fitted slopes. JSON holds no NaN or infinity: a figure
that cannot be estimated (noise swamps the signal, too few points) is null.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from vaezoo.core.configs import to_dict
from vaezoo.core.io import atomic_write_bytes, atomic_write_text
from vaezoo.gradnoise.analysis import Analysis, k_sweep_batch, split_at, sweep
from vaezoo.gradnoise.baseline import WARMUP_BATCH, WARMUP_DRAWS
from vaezoo.gradnoise.measure import MODEL, Study
from vaezoo.gradnoise.pergrad import NETWORKS

FORMAT = "vaezoo-gradvar-1"
STAT_NOTES = {
    "trace_cov": "tr Cov[g], g the minibatch gradient",
    "grad_sq": "|E g|^2, unbiased",
    "mean_grad_norm": "|E g| (sqrt of the unbiased |E g|^2, 0 where noise swamps it)",
    "mean_sq_norm": "E|g|^2",
    "snr_mean": "mean over parameters of |E g_p| / std g_p (Rainforth et al. 2018)",
    "snr_median": "median over parameters of |E g_p| / std g_p",
    "snr_mom": "median over parameters of |median of group means| / sqrt(median of group variances) (heavy-tail check)",
    "latent_var": "E_batch[tr Var_eps g]: the part from sampling z",
    "data_var": "total - latent: the part from sampling the data",
    "latent_fraction": "latent_var / trace_cov",
    "data_var_nested": "the data part from the nested design alone (a cross-check, no interval)",
    "b_simple": "B tr Cov[g_B] / |E g|^2 (McCandlish et al. 2018), from this cell alone",
    "trace_sigma": "tr Sigma, the per-example gradient covariance",
}


def clean(value):
    """JSON-safe: non-finite floats become None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def document(study: Study, analysis: Analysis, meta: dict) -> dict:
    """The whole study as one JSON-able dict."""
    cfg = study.cfg
    return clean(
        {
            "format": FORMAT,
            "config": to_dict(cfg),
            **meta,
            "parameters": study.sizes,
            "draws_per_cell": cfg.draws,
            "snr_floor": 1 / math.sqrt(cfg.draws),
            "k_sweep_batch": k_sweep_batch(study),
            "seconds": study.seconds,
            "statistics": STAT_NOTES,
            "cells": [
                {
                    "bound": c.cell.bound,
                    "estimator": c.cell.estimator,
                    "B": c.cell.B,
                    "K": c.cell.K,
                    "info": c.info,
                    "networks": c.figures(),
                }
                for c in study.cells
            ],
            "pools": [
                {"bound": p.bound, "estimator": p.estimator, "K": p.K, "info": p.info, "networks": p.figures()}
                for p in study.pools
            ],
            "analysis": analysis.to_dict(),
        }
    )


CSV_COLUMNS = ("kind", "bound", "estimator", "B", "K", "network", "statistic", "value", "ci_low", "ci_high", "draws")


def tidy_rows(study: Study) -> list[dict]:
    rows = []
    for c in study.cells:
        for net, figs in c.figures().items():
            for name, f in figs.items():
                rows.append(
                    {
                        "kind": "cell",
                        "bound": c.cell.bound,
                        "estimator": c.cell.estimator,
                        "B": c.cell.B,
                        "K": c.cell.K,
                        "network": net,
                        "statistic": name,
                        "value": f["value"],
                        "ci_low": f["lo"],
                        "ci_high": f["hi"],
                        "draws": study.cfg.draws,
                    }
                )
    for p in study.pools:
        for net, figs in p.figures().items():
            for name, f in figs.items():
                rows.append(
                    {
                        "kind": "per_example",
                        "bound": p.bound,
                        "estimator": p.estimator,
                        "B": 1,
                        "K": p.K,
                        "network": net,
                        "statistic": name,
                        "value": f["value"],
                        "ci_low": f["lo"],
                        "ci_high": f["hi"],
                        "draws": p.info["N"],
                    }
                )
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "inf" if x == math.inf else "n/a"
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}" if abs(x) >= 1 else f"{x:.{digits}f}"


def _ci(f: dict) -> str:
    return f"{_fmt(f['value'])} [{_fmt(f['lo'])}, {_fmt(f['hi'])}]"


def _apart(*values: float | None, digits: int = 3, most: int = 6) -> list[str]:
    """The values formatted with the fewest significant digits (from ``digits``) that keep distinct values
    distinct: a slope interval [-1.03, -1.003] beside an expected -1 must not print as [-1.03, -1]."""
    distinct = {v for v in values if v is not None and math.isfinite(v)}
    for d in range(digits, most + 1):
        out = [_fmt(v, d) for v in values]
        if len({_fmt(v, d) for v in distinct}) == len(distinct):
            return out
    return out


def _slope_ci(f: dict, expected: float | str | None) -> str:
    """A fitted slope and its interval, with enough digits to see where they sit against ``expected`` (a
    number; a worded expectation is not compared)."""
    ref = float(expected) if isinstance(expected, (int, float)) else None
    value, lo, hi, *_ = _apart(f["value"], f["lo"], f["hi"], ref)
    return f"{value} [{lo}, {hi}]"


def headline(study: Study, analysis: Analysis) -> dict:
    """The figures a note quotes: variance-vs-B slope, the split at B = 64 (or nearest) and K = min K,
    B_simple both ways, and the IWAE encoder/decoder (and DReG encoder) SNR slopes vs K."""
    combos = study.cfg.combos()
    base = ("elbo", "reparam") if ("elbo", "reparam") in combos else combos[0]
    out: dict = {"base": f"{base[0]}/{base[1]}"}
    f = analysis.fit("variance_vs_B", *base, MODEL)
    if f:
        out["variance_vs_B_slope"] = {"value": f.slope, "lo": f.lo, "hi": f.hi, "xs": f.xs, "K": f.fixed}
    bs = [c.cell.B for c in sweep(study, *base, "B")]
    if bs and study.cfg.split:
        B = min(bs, key=lambda b: abs(math.log(b / 64)))
        out["split"] = {"B": B, "K": study.cfg.k_base, **(split_at(study, *base, B, study.cfg.k_base) or {})}
    for row in analysis.pooled:
        if (row["bound"], row["estimator"]) == base:
            out["b_simple_per_example"] = row["networks"][MODEL]["b_simple"]
    for row in analysis.two_batch:
        if (row["bound"], row["estimator"]) == base:
            out["b_simple_two_batch"] = {
                **row["networks"][MODEL]["b_simple"],
                "b_small": row["b_small"],
                "b_big": row["b_big"],
            }
    for est, net in (("reparam", "encoder"), ("reparam", "decoder"), ("dreg", "encoder")):
        f = analysis.fit("snr_mean_vs_K", "iwae", est, net)
        if f:
            out[f"iwae_{est}_{net}_snr_slope"] = {
                "value": f.slope,
                "lo": f.lo,
                "hi": f.hi,
                "xs": f.xs,
                "B": f.fixed,
                "expected": f.expected or f.expectation,
            }
    return out


def _score_baseline_lines(study: Study) -> list[str]:
    """Which baseline the score estimator's figures carry: what training uses, or none (labelled either way)."""
    values = sorted({str(c.info["score_baseline"]) for c in study.cells if "score_baseline" in c.info})
    if not values:
        return []
    if study.cfg.score_baseline == "none":
        return ["- score estimator: no baseline (--score-baseline none; training subtracts one, so its variance is lower)"]
    return [
        f"- score estimator: the baseline training uses, held at its settled value (the mean learning signal over "
        f"{WARMUP_DRAWS} x {WARMUP_BATCH} warm-up draws): {', '.join(values)} nats"
    ]


def headline_lines(h: dict) -> list[str]:
    """The headline figures as markdown bullets (also what the command prints)."""
    lines = []
    if "variance_vs_B_slope" in h:
        v = h["variance_vs_B_slope"]
        lines.append(
            f"- variance vs B slope ({h['base']}, whole model, K={v['K']}, B={v['xs']}): {_slope_ci(v, -1.0)} (expected -1)"
        )
    if h.get("split", {}).get(MODEL):
        s = h["split"]
        parts = [f"{net} latent fraction {_ci(s[net]['latent_fraction'])}" for net in (*NETWORKS, MODEL)]
        lines.append(f"- data/latent split at B={s['B']} K={s['K']} ({h['base']}): " + "; ".join(parts))
    if "b_simple_per_example" in h:
        lines.append(
            f"- B_simple, per-example gradients ({h['base']}, whole model): {_ci(h['b_simple_per_example'])} "
            "(the critical batch size it predicts)"
        )
    if "b_simple_two_batch" in h:
        t = h["b_simple_two_batch"]
        lines.append(f"- B_simple, two-batch estimator from B={t['b_small']},{t['b_big']} ({h['base']}): {_ci(t)}")
    for key in ("iwae_reparam_encoder_snr_slope", "iwae_reparam_decoder_snr_slope", "iwae_dreg_encoder_snr_slope"):
        if key in h:
            v = h[key]
            name = key.removesuffix("_snr_slope").replace("_", " ")
            lines.append(
                f"- {name} SNR vs K slope (B={v['B']}, K={v['xs']}): {_slope_ci(v, v['expected'])} "
                f"(expected {v['expected']})"
            )
    return lines


def markdown(study: Study, analysis: Analysis, meta: dict, h: dict) -> str:
    """summary.md; ``h``: the headline() of this study and analysis when the caller already has it."""
    cfg = study.cfg
    floor = 1 / math.sqrt(cfg.draws)
    src = meta.get("source", {})
    lines = [
        "# Gradient variance and SNR",
        "",
        f"- model: {src.get('description', '?')}; parameters: encoder {study.sizes.get('encoder')}, decoder {study.sizes.get('decoder')}",
        f"- data: {meta.get('data', {}).get('description', '?')}",
        f"- device: {meta.get('device', '?')}; {study.seconds:.0f} s",
        f"- R = {cfg.draws} independent draws per cell (fresh minibatch {'with' if cfg.replacement else 'without'} replacement, "
        f"fresh eps); SNR below 1/sqrt(R) = {floor:.3f} cannot be told from noise",
        f"- split: {cfg.draws // cfg.inner} fixed minibatches x {cfg.inner} eps draws" if cfg.split else "- split: off",
        f"- intervals: 95% bias-corrected percentile bootstrap, {cfg.bootstrap} replicates"
        if cfg.bootstrap
        else "- intervals: off",
        *_score_baseline_lines(study),
        "",
    ]
    lines += ["## Headline", "", *headline_lines(h)]
    lines += [
        "",
        "## Fitted slopes (log-log, 95% interval)",
        "",
        "| fit | bound | estimator | network | along | slope [95% CI] | expected | agrees |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in analysis.fits:
        exp = _fmt(f.expected) if f.expected is not None else (f.expectation or "")
        agree = {True: "yes", False: "no", None: ""}[f.agrees]
        lines.append(
            f"| {f.name} | {f.bound} | {f.estimator} | {f.network} | {f.axis}={f.xs} | "
            f"{_slope_ci({'value': f.slope, 'lo': f.lo, 'hi': f.hi}, f.expected)} | {exp} | {agree} |"
        )
    if cfg.split:
        lines += [
            "",
            f"## Data/latent split (tr Cov[g] = data part + latent part), K sweep at B={k_sweep_batch(study)}",
            "",
            "| bound | estimator | B | K | network | total | data | latent | latent fraction |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for c in study.cells:
            figs = c.figures()  # every network's figures at once: build them once per cell
            for net in (*NETWORKS, MODEL):
                p = figs[net]
                lines.append(
                    f"| {c.cell.bound} | {c.cell.estimator} | {c.cell.B} | {c.cell.K} | {net} | {_ci(p['trace_cov'])} | "
                    f"{_ci(p['data_var'])} | {_ci(p['latent_var'])} | {_ci(p['latent_fraction'])} |"
                )
    lines += [
        "",
        "## Simple noise scale B_simple = tr Sigma / |G|^2 (McCandlish et al. 2018)",
        "",
        "| bound | estimator | K | network | per-example | two-batch |",
        "|---|---|---|---|---|---|",
    ]
    two = {(r["bound"], r["estimator"]): r for r in analysis.two_batch}
    for r in analysis.pooled:
        t = two.get((r["bound"], r["estimator"]))
        for net in (*NETWORKS, MODEL):
            tb = f"{_ci(t['networks'][net]['b_simple'])} (B={t['b_small']},{t['b_big']})" if t else "n/a"
            lines.append(
                f"| {r['bound']} | {r['estimator']} | {r['K']} | {net} | {_ci(r['networks'][net]['b_simple'])} (N={r['N']}) | {tb} |"
            )
    if analysis.equal_compute:
        lines += [
            "",
            "## Equal compute: at a fixed B x K, which split has the lowest tr Cov (whole model)",
            "",
            "| bound | estimator | B x K | cells (B x K: tr Cov [95% CI]) | lowest |",
            "|---|---|---|---|---|",
        ]
        for e in analysis.equal_compute:
            cells = "; ".join(f"{r['B']}x{r['K']}: {_ci(r)}" for r in e["cells"])
            lines.append(
                f"| {e['bound']} | {e['estimator']} | {e['budget']} | {cells} | {e['best']['B']}x{e['best']['K']} |"
            )
    lines += ["", "Every cell and statistic, with intervals: `cells.csv`; everything: `gradvar.json`.", ""]
    return "\n".join(lines)


# --- plots -------------------------------------------------------------------------------------------


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _errorbar(ax, xs, cells, net, name, **kw) -> str | None:
    """Points with their intervals on a log axis (non-positive values left out); returns the line colour."""
    ys = [c.point[net][name] for c in cells]
    cis = [c.ci(net, name) for c in cells]
    lo = [max(y - a, 0) if math.isfinite(a) else 0 for y, (a, _) in zip(ys, cis)]
    hi = [max(b - y, 0) if math.isfinite(b) else 0 for y, (_, b) in zip(ys, cis)]
    keep = [i for i, y in enumerate(ys) if math.isfinite(y) and y > 0]
    if not keep:
        return None
    bars = ax.errorbar(
        [xs[i] for i in keep],
        [ys[i] for i in keep],
        yerr=[[lo[i] for i in keep], [hi[i] for i in keep]],
        capsize=2,
        marker="o",
        ms=3,
        **kw,
    )
    return bars[0].get_color()


def plots(study: Study, analysis: Analysis, out: Path) -> list[Path]:
    """The study's figures: variance vs B, SNR vs K, the data/latent split (when measured), the noise scale."""
    paths = [_plot_variance_vs_b(study, analysis, out), _plot_snr_vs_k(study, analysis, out)]
    paths += _plot_decompositions(study, analysis, out)
    paths.append(_plot_noise_scale(study, analysis, out))
    return paths


def _plot_variance_vs_b(study: Study, analysis: Analysis, out: Path) -> Path:
    """tr Cov[g] against B per network, with the slope -1 of independent examples."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas on save

    combos = study.cfg.combos()
    fig = Figure(figsize=(4.2 * 3, 3.6), layout="constrained")
    for ax, net in zip(fig.subplots(1, 3), (*NETWORKS, MODEL)):
        for bound, est in combos:
            cells = sweep(study, bound, est, "B")
            f = analysis.fit("variance_vs_B", bound, est, net)
            label = f"{bound}/{est}" + (f" slope {f.slope:.2f}" if f else "")
            _errorbar(ax, [c.cell.B for c in cells], cells, net, "trace_cov", label=label)
        ref = sweep(study, *combos[0], "B")
        if len(ref) > 1:
            x0, y0 = ref[0].cell.B, ref[0].point[net]["trace_cov"]
            xs = [c.cell.B for c in ref]
            ax.plot(xs, [y0 * x0 / x for x in xs], "k--", lw=0.8, label="slope -1")
        ax.set(
            xscale="log", yscale="log", xlabel="batch size B", ylabel="tr Cov[g]", title=f"{net}, K={study.cfg.k_base}"
        )
        ax.legend(fontsize=6)
    return _save(fig, out / "variance_vs_B.png")


def _plot_snr_vs_k(study: Study, analysis: Analysis, out: Path) -> Path:
    """Mean SNR over parameters against K per network, with the 1/sqrt(R) floor of R draws."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas on save

    combos = study.cfg.combos()
    floor = 1 / math.sqrt(study.cfg.draws)
    fig = Figure(figsize=(4.2 * 2, 3.6), layout="constrained")
    for ax, net in zip(fig.subplots(1, 2), NETWORKS):
        for bound, est in combos:
            cells = sweep(study, bound, est, "K")
            f = analysis.fit("snr_mean_vs_K", bound, est, net)
            label = f"{bound}/{est}" + (f" slope {f.slope:.2f}" if f else "")
            _errorbar(ax, [c.cell.K for c in cells], cells, net, "snr_mean", label=label)
        ax.axhline(floor, color="grey", ls=":", lw=0.8, label="1/sqrt(R)")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="samples per z K",
            ylabel="mean SNR over parameters",
            title=f"{net}, B={k_sweep_batch(study)}",
        )
        ax.legend(fontsize=6)
    return _save(fig, out / "snr_vs_K.png")


def _plot_decompositions(study: Study, analysis: Analysis, out: Path) -> list[Path]:
    """Total, data and latent variance against B and K, one figure per (bound, estimator)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas on save

    combos = study.cfg.combos()
    paths = []
    if study.cfg.split:
        for bound, est in combos:
            fig = Figure(figsize=(4.2 * 2, 3.4 * 2), layout="constrained")
            axes = fig.subplots(2, 2)
            for row, net in enumerate(NETWORKS):
                for col, axis in enumerate(("B", "K")):
                    cells = sweep(study, bound, est, axis)
                    xs = [c.cell.B if axis == "B" else c.cell.K for c in cells]
                    ax = axes[row][col]
                    for name, label in (("trace_cov", "total"), ("data_var", "data"), ("latent_var", "latent")):
                        _errorbar(ax, xs, cells, net, name, label=label)
                    fixed = f"K={study.cfg.k_base}" if axis == "B" else f"B={k_sweep_batch(study)}"
                    ax.set(
                        xscale="log", yscale="log", xlabel=axis, ylabel="trace", title=f"{bound}/{est} {net}, {fixed}"
                    )
                    ax.legend(fontsize=6)
            paths.append(_save(fig, out / f"decomposition_{bound}_{est}.png"))
    return paths


def _plot_noise_scale(study: Study, analysis: Analysis, out: Path) -> Path:
    """B_simple per cell against B, beside the per-example (pooled) estimate."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas on save

    combos = study.cfg.combos()
    fig = Figure(figsize=(5, 3.6), layout="constrained")
    ax = fig.subplots()
    pooled = {(r["bound"], r["estimator"]): r["networks"][MODEL]["b_simple"]["value"] for r in analysis.pooled}
    for bound, est in combos:
        cells = sweep(study, bound, est, "B")
        color = _errorbar(ax, [c.cell.B for c in cells], cells, MODEL, "b_simple", label=f"{bound}/{est} per cell")
        v = pooled.get((bound, est), math.nan)
        if math.isfinite(v) and v > 0:
            ax.axhline(v, color=color, ls=":", lw=0.8, label=f"{bound}/{est} per-example")
    ax.set(
        xscale="log", yscale="log", xlabel="batch size B", ylabel="B_simple (whole model)", title="simple noise scale"
    )
    ax.legend(fontsize=6)
    return _save(fig, out / "noise_scale.png")


def write_all(study: Study, analysis: Analysis, meta: dict, out: Path) -> tuple[dict[str, Path], dict]:
    """Write every output into ``out``; returns the paths by role and the headline() (raw, not cleaned:
    headline_lines prints an infinite figure as inf, a cleaned one as n/a)."""
    h = headline(study, analysis)
    doc = document(study, analysis, meta)
    doc["headline"] = clean(h)
    paths = {"json": out / "gradvar.json", "csv": out / "cells.csv", "summary": out / "summary.md"}
    atomic_write_text(paths["json"], json.dumps(doc, indent=1, allow_nan=False) + "\n")
    write_csv(paths["csv"], tidy_rows(study))
    atomic_write_text(paths["summary"], markdown(study, analysis, meta, h))
    for p in plots(study, analysis, out):
        paths[p.stem] = p
    return paths, h


__all__ = ["document", "headline", "markdown", "plots", "tidy_rows", "write_all"]
