"""``rainforth-snr``: with more importance samples K, IWAE's encoder gradient gets noisier relative to its signal.

Rainforth et al. 2018 ("Tighter variational bounds are not necessarily better"): for the IWAE bound with the
reparameterised estimator, the encoder's gradient signal-to-noise ratio falls as K^-1/2 and the decoder's rises
as K^+1/2 (asymptotically in K, at a fixed x). DReG (Tucker et al. 2019) keeps the encoder's SNR from falling.
Measured in two halves, each at fixed x's (the papers' setting) with vaezoo's gradient-variance engine
(``vaezoo.gradnoise``): per-K SNR from independent draws, a log-log slope with a bootstrap interval per x, and a
t-interval of the slope over seeds.

- Linear-Gaussian: the true decoder, the encoder at the true posterior plus a seeded perturbation (so the
  gradient is not zero), one training x per seed.
- Trained: an IWAE trained in the job (digits or mnist5k, seeded), several test images per seed.

The asymptotic regime needs the importance weights to be well behaved: the report gives their effective sample
size (Kong 1992; ESS = (sum w)^2 / sum w^2) at each x (and, for the trained model, at each K) and judges a slope
only at the x where ESS / S is not too small for the theory's slopes to be expected.
"""

from __future__ import annotations

import torch

from vaezoo.studies import intervals as iv
from vaezoo.studies.base import Job, JobContext, Report, Study
from vaezoo.studies.figures import pyplot, to_png
from vaezoo.studies.runner import child_run

EXPECTED = {("reparam", "encoder"): -0.5, ("reparam", "decoder"): 0.5, ("dreg", "decoder"): 0.5}
ESS_REGIME = 0.1  # ESS / S below this: the weights are too heavy-tailed for the asymptotic slopes to be expected
MOM_GROUPS = 8  # groups of draws for the median-of-means SNR (every preset's draws divide by it)
CHECKS = {"snr_median_vs_K": ".median", "snr_mom_vs_K": ".mom"}  # robustness fits beside the judged mean-SNR one
HALVES = ("linear-gaussian", "trained")


def linear_gaussian_model(seed: int, perturb: float):
    """A linear VAE with the true decoder and the true posterior as its encoder, perturbed (seeded)."""
    from vaezoo.data.linear_gaussian import LinearGaussian
    from vaezoo.models import build_model

    truth = LinearGaussian.default()
    torch.manual_seed(seed)
    model = build_model(truth.model_config(name="vae"))
    truth.set_model(model, posterior=True)
    g = torch.Generator().manual_seed(30_000 + seed)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(perturb * torch.randn(p.shape, generator=g))
    return model


@torch.no_grad()
def effective_sample_size(model, x: torch.Tensor, samples: int, generator: torch.Generator, repeats: int = 1) -> float:
    """ESS / S of S importance weights w = p(x, z) / q(z|x), z ~ q(z|x), at one x (from log w via logsumexp);
    with ``repeats``, the mean of ESS / S over that many independent sets of S weights (at small S one set is
    too noisy a reading)."""
    from vaezoo.objectives.log_weights import log_weight
    from vaezoo.objectives.reparam import reparameterise

    xs = x.expand(repeats, *x.shape[1:])  # each column of the [S, repeats] weights is one independent set
    q = model.encode(xs)
    eps = torch.randn((samples, *q.mu.shape), generator=generator)
    lw = log_weight(model, xs, reparameterise(q, eps), q).total.double()
    return float(torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)).mean()) / samples


def snr_sweep(model, x: torch.Tensor, ks, draws: int, bootstrap: int, seed: int) -> dict:
    """At one fixed x: per (estimator.network) the SNR at each K and the log-log slope of the mean (over
    parameters) SNR with its bootstrap interval; beside it, as checks against heavy-tailed draws, the slopes of
    the median SNR over parameters and of the median-of-means SNR (``.median``, ``.mom``; point estimates)."""
    from vaezoo.gradnoise.analysis import fits
    from vaezoo.gradnoise.measure import GradVarConfig, run_study

    cfg = GradVarConfig(batch_sizes=(1,), ks=tuple(ks), bounds=("iwae",), estimators=("reparam", "dreg"),
                        k_sweep_batch=1, data_limit=1, split=False, pool=0, draws=draws, bootstrap=bootstrap, seed=seed,
                        mom_groups=MOM_GROUPS)
    study = run_study(model, x, "none", cfg, torch.device("cpu"), progress=False)
    out: dict = {}
    for f in fits(study):
        if f.name == "snr_mean_vs_K":
            out[f"{f.estimator}.{f.network}"] = {"slope": f.slope, "lo": f.lo, "hi": f.hi}
        elif f.name in CHECKS:
            interval = {"lo": f.lo, "hi": f.hi} if f.lo == f.lo else {}  # the median of means has none (NaN)
            out[f"{f.estimator}.{f.network}{CHECKS[f.name]}"] = {"slope": f.slope, **interval}
    for c in study.cells:
        for net in ("encoder", "decoder"):
            fig = c.figure(net, "snr_mean")
            out[f"{c.cell.estimator}.{net}"].setdefault("snr", []).append({"K": c.cell.K, **fig})
    return out


def slope_keys(fit: dict) -> list[str]:
    """The judged estimator.network keys of one x's fits (not the checks), reparam before DReG, encoder before
    decoder, whatever order the fits were stored in (study.json sorts its keys)."""
    keys = [k for k, v in fit.items() if isinstance(v, dict) and "slope" in v and not k.endswith(tuple(CHECKS.values()))]
    order = {"reparam": 0, "dreg": 1, "encoder": 0, "decoder": 1}
    return sorted(keys, key=lambda k: tuple(order.get(part, 2) for part in k.split(".")))


def agrees(key: str, fit: dict) -> bool:
    """Whether one x's bootstrap interval holds the expected slope ('not falling': its upper end >= 0)."""
    expected = EXPECTED.get(tuple(key.split(".")))
    return fit["hi"] >= 0 if expected is None else fit["lo"] <= expected <= fit["hi"]


def judge(keys: list[str], fits: list[dict], regime: list[bool], names: list[str], ks) -> tuple[str, str]:
    """One half's verdict from its x's fits: only the x where the weights' ESS reaches the regime are judged."""
    judged = [(n, f) for n, f, ok in zip(names, fits, regime) if ok]
    out = [n for n, ok in zip(names, regime) if not ok]
    if not judged:
        return "depends", (f"ESS / S is below {ESS_REGIME} at every x: the asymptotic regime is not reached, so the "
                           "slopes are not a test of the theory.")
    misses = {k: [n for n, f in judged if not agrees(k, f[k])] for k in keys}
    wrong = [k for k in keys if EXPECTED.get(tuple(k.split("."))) is not None
             and all(f[k]["slope"] * EXPECTED[tuple(k.split("."))] < 0 for _, f in judged)]
    where = f" (judged at x {', '.join(n for n, _ in judged)}; regime NOT reached at x {', '.join(out)})" if out else ""
    if wrong:
        return "does not hold", f"{', '.join(wrong)} slope the wrong way at every x in the regime{where}."
    if not any(misses.values()):
        if out:
            return "depends", f"every slope agrees where the regime is reached{where}; the other x are not a test."
        return "holds", ("at every x each slope's bootstrap interval holds the expected value (encoder reparam -1/2, "
                         "decoders +1/2, DReG encoder not falling).")
    text = "; ".join(f"{k} at x {', '.join(v)}" for k, v in misses.items() if v)
    return "depends", (f"no slope goes the wrong way at every x in the regime, but some bootstrap intervals miss the "
                       f"expected value ({text}){where}: what is not reached is the large-K limit (K = {ks[0]} to "
                       f"{ks[-1]}).")


class RainforthSNR(Study):
    name = "rainforth-snr"
    claim = ("IWAE with reparameterised gradients: encoder SNR ~ K^-1/2 and decoder SNR ~ K^+1/2 (Rainforth et al. "
             "2018); DReG's encoder SNR does not fall with K (Tucker et al. 2019).")
    source = "Rainforth et al. 2018 (ICML), Tucker et al. 2019 (ICLR); shared/FORMULAS.md 'Gradient noise'"
    # full's trained half: a cell keeps draws x parameters floats, about 9 GB at 2000 x 1.1M (mnist5k 512-256-32)
    presets = {
        "tiny": {"ks": (1, 4, 16), "draws": 64, "bootstrap": 50, "perturb": 0.05, "ess_samples": 1000, "seeds": 3,
                 "trained": {"dataset": "digits", "hidden": (64, 32), "latent_dim": 4, "steps": 300, "k": 8, "xs": 2,
                             "ks": (1, 4, 16), "draws": 64, "bootstrap": 50, "ess_repeats": 100}},
        "quick": {"ks": (1, 4, 16, 64, 256), "draws": 400, "bootstrap": 200, "perturb": 0.05, "ess_samples": 5000, "seeds": 3,
                  "trained": {"dataset": "digits", "hidden": (256, 128), "latent_dim": 8, "steps": 3000, "k": 16, "xs": 3,
                              "ks": (1, 4, 16, 64, 256), "draws": 400, "bootstrap": 200, "ess_repeats": 200}},
        "full": {"ks": (1, 4, 16, 64, 256, 1024), "draws": 2000, "bootstrap": 500, "perturb": 0.05, "ess_samples": 5000,
                 "seeds": 8,
                 "trained": {"dataset": "mnist5k", "hidden": (512, 256), "latent_dim": 32, "steps": 20000, "k": 64,
                             "xs": 5, "ks": (1, 4, 16, 64, 256, 1024), "draws": 2000, "bootstrap": 500,
                             "ess_repeats": 200}},
    }

    def jobs(self, params: dict, seeds: list[int]) -> list[Job]:
        return ([Job(f"x{s}/seed{s}", s, {"half": HALVES[0], "params": params}) for s in seeds]
                + [Job(f"trained/seed{s}", s, {"half": HALVES[1], "params": params}) for s in seeds])

    def run_job(self, job: Job, ctx: JobContext) -> dict:
        return self._trained(job, ctx) if job.payload["half"] == "trained" else self._linear_gaussian(job, ctx)

    @staticmethod
    def _linear_gaussian(job: Job, ctx: JobContext) -> dict:
        from vaezoo.data import DataConfig, load_dataset

        params = job.payload["params"]
        model = linear_gaussian_model(job.seed, params["perturb"])
        x = load_dataset(DataConfig(name="linear-gaussian", binarize="none")).train[job.seed : job.seed + 1]
        out = snr_sweep(model, x, params["ks"], params["draws"], params["bootstrap"], job.seed)
        out["ess_fraction"] = effective_sample_size(model, x, params["ess_samples"], torch.Generator().manual_seed(job.seed))
        child_run(ctx, f"rainforth-snr-x{job.seed}", {"seed": job.seed, **{k: v for k, v in params.items() if k != "trained"}},
                  {f"{k}.slope": out[k]["slope"] for k in slope_keys(out)} | {"ess_fraction": out["ess_fraction"]})
        return out

    @staticmethod
    def _trained(job: Job, ctx: JobContext) -> dict:
        """Train an IWAE (seeded), then at ``xs`` fixed test images the SNR sweep and the ESS / K at each K."""
        from vaezoo.studies.training import study_data, train_job, user_config

        p = job.payload["params"]["trained"]
        model, cfg, _ = train_job(job, ctx, user_config(p, job.seed, {"name": "iwae"}, {"bound": "iwae", "k": p["k"]}))
        data = study_data(cfg.data.name, cfg.data.binarize)
        per_x = []
        for j in range(p["xs"]):
            index = job.seed * p["xs"] + j  # distinct test images over seeds
            x = data.test[index : index + 1]
            fit = snr_sweep(model, x, p["ks"], p["draws"], p["bootstrap"], 1000 * job.seed + j)
            g = torch.Generator().manual_seed(1000 * job.seed + j)
            fit["ess_per_k"] = {str(k): effective_sample_size(model, x, k, g, p["ess_repeats"]) for k in p["ks"]}
            per_x.append({"x": index, **fit})
        return {"per_x": per_x}

    def analyse(self, params: dict, seeds: list[int], results: dict[str, dict]) -> Report:
        lg = self._analyse_linear_gaussian(params, seeds, [results[f"x{s}/seed{s}"] for s in seeds])
        tr = self._analyse_trained(params["trained"], seeds, [results[f"trained/seed{s}"] for s in seeds])
        verdicts = (lg["verdict"], tr["verdict"])
        if verdicts == ("holds", "holds"):
            verdict, how = "holds", "both halves hold"
        elif "does not hold" in verdicts:
            verdict, how = "does not hold", "a half finds a slope the wrong way at every x in the regime"
        else:
            verdict, how = "depends", "a half does not resolve the claim (regime or large-K limit not reached)"
        why = (f"Combined: {how}. Linear-Gaussian half: {lg['verdict']}: {lg['why']} Trained half: {tr['verdict']}: "
               f"{tr['why']}")
        numbers = {"linear_gaussian": lg["numbers"], "trained": tr["numbers"],
                   "expected": {".".join(k): v for k, v in EXPECTED.items()}, "ess_regime": ESS_REGIME}
        return Report(verdict, why, lg["sections"] + tr["sections"], numbers, lg["figures"] | tr["figures"])

    def _analyse_linear_gaussian(self, params: dict, seeds: list[int], runs: list[dict]) -> dict:
        keys = slope_keys(runs[0])
        slopes = {k: iv.t_interval([r[k]["slope"] for r in runs]) for k in keys}
        ess = [r["ess_fraction"] for r in runs]
        regime = [e >= ESS_REGIME for e in ess]
        verdict, why = judge(keys, runs, regime, [str(s) for s in seeds], params["ks"])
        why += f" Over x: {'; '.join(f'{k}: {iv.fmt(slopes[k])}' for k in keys)}; ESS / S {', '.join(f'{e:.3f}' for e in ess)}."
        numbers = {"slopes": slopes, "per_x": runs, "ess_fraction": ess, "in_regime": all(regime),
                   "agrees_at_every_x": {k: all(agrees(k, r[k]) for r in runs) for k in keys}}
        ess_rows = ["| seed (x) | ESS / S | regime |", "|---:|---:|---|"]
        ess_rows += [f"| {s} | {e:.3f} | {'reached' if ok else 'NOT reached'} |" for s, e, ok in zip(seeds, ess, regime)]
        sections = [
            "## Linear-Gaussian half\n\n### Setup\n\n"
            f"Linear-Gaussian model (vaezoo.data.linear_gaussian, D = 12, d = 3): true decoder, encoder = true posterior "
            f"+ N(0, {params['perturb']}^2) on its weights (seeded). One fixed training x per seed (x index = seed), B = 1, "
            f"K in {', '.join(map(str, params['ks']))}, {params['draws']} independent gradient draws per K; SNR = mean over "
            f"parameters of |E g| / sd g; the per-x interval is a bootstrap ({params['bootstrap']} replicates) of the "
            "log-log slope, the interval over x is a t-interval of the per-x slopes.\n",
            "### Slopes\n\n" + "\n".join(self._slope_rows(keys, slopes, runs)) + "\n\n![slopes](slopes.png)\n",
            "### Is the asymptotic regime reached?\n\n"
            f"ESS / S of {params['ess_samples']} importance weights at each x (Kong 1992). Below {ESS_REGIME} a few weights "
            "dominate, the K-sample estimates are far from their large-K behaviour, and the theory's slopes are not "
            "expected.\n\n" + "\n".join(ess_rows) + "\n",
        ]
        return {"verdict": verdict, "why": why, "numbers": numbers, "sections": sections,
                "figures": {"slopes.png": self._figure(keys, slopes, runs, "linear-Gaussian: SNR slopes over seeds")}}

    def _analyse_trained(self, p: dict, seeds: list[int], results: list[dict]) -> dict:
        xs = [fit for r in results for fit in r["per_x"]]
        names = [str(fit["x"]) for fit in xs]
        keys = slope_keys(xs[0])
        big = str(p["ks"][-1])
        regime = [min(fit["ess_per_k"].values()) >= ESS_REGIME for fit in xs]
        # x's of one seed share a model: the interval over seeds is of each seed's mean slope over its x's
        per_seed = {k: [sum(f[k]["slope"] for f in r["per_x"]) / len(r["per_x"]) for r in results]
                    for k in (*keys, *(k + c for k in keys for c in CHECKS.values()))}
        slopes = {k: iv.t_interval(v) for k, v in per_seed.items()}
        verdict, why = judge(keys, xs, regime, names, p["ks"])
        why += f" Over seeds: {'; '.join(f'{k}: {iv.fmt(slopes[k])}' for k in keys)}."
        widths = {k: [f[k]["hi"] - f[k]["lo"] for f in xs] for k in keys}
        # both medians over parameters; the median of means is what rare huge draws cannot move: where its slope is
        # inside the median-SNR slope's interval, the tails do not drive the slope
        mom_inside = {k: sum(f[k + ".median"]["lo"] <= f[k + ".mom"]["slope"] <= f[k + ".median"]["hi"] for f in xs)
                      for k in keys}
        numbers = {"slopes": slopes, "in_regime": dict(zip(names, regime)),  # each x's fits: the jobs' own numbers
                   "ess_per_k": {n: f["ess_per_k"] for n, f in zip(names, xs)},
                   "bootstrap_width": {k: {"mean": sum(w) / len(w), "max": max(w)} for k, w in widths.items()},
                   "mom_slope_inside_interval": mom_inside,
                   "agrees_at_every_x": {k: all(agrees(k, f[k]) for f in xs) for k in keys}}
        last = str(p["ks"][-2]) if len(p["ks"]) > 1 else big
        ess_rows = ["| seed | test x | " + " | ".join(f"ESS/K at K={k}" for k in p["ks"]) + f" | K={big} / K={last} | regime |",
                    "|---:|---:|" + "---:|" * (len(p["ks"]) + 1) + "---|"]
        for s, r in zip(seeds, results):
            for f in r["per_x"]:
                ok = min(f["ess_per_k"].values()) >= ESS_REGIME
                ess_rows.append(f"| {s} | {f['x']} | " + " | ".join(f"{f['ess_per_k'][str(k)]:.3f}" for k in p["ks"])
                                + f" | {f['ess_per_k'][big] / f['ess_per_k'][last]:.2f} | {'reached' if ok else 'NOT reached'} |")
        check = ["| estimator.network | mean-SNR slope (judged) | its bootstrap width, mean (max) over x | median-SNR slope "
                 "| median-of-means slope | MoM inside the median's interval |", "|---|---:|---:|---:|---:|---:|"]
        check += [f"| {k} | {iv.fmt(slopes[k])} | {numbers['bootstrap_width'][k]['mean']:.3f} "
                  f"({numbers['bootstrap_width'][k]['max']:.3f}) | {iv.fmt(slopes[k + '.median'])} | "
                  f"{iv.fmt(slopes[k + '.mom'])} | {mom_inside[k]} / {len(xs)} x |" for k in keys]
        sections = [
            "## Trained half\n\n### Setup\n\n"
            f"An IWAE (K = {p['k']}) trained in the job on {p['dataset']} (MLP {'-'.join(map(str, p['hidden']))}, latent "
            f"{p['latent_dim']}, {p['steps']} steps, seeded), then at {p['xs']} fixed binarised test images per seed (index "
            f"seed x {p['xs']} + j): B = 1, K in {', '.join(map(str, p['ks']))}, {p['draws']} independent gradient draws per "
            f"K and estimator, bootstrap of {p['bootstrap']} replicates for each x's slope. The interval over seeds is of "
            "each seed's mean slope over its x's (the x's of one seed share a model).\n",
            "### Slopes\n\nPer x: slope [bootstrap interval]; x in the regime are judged, the others shown.\n\n"
            + "\n".join(self._slope_rows(keys, slopes, xs, names)) + "\n\n![trained slopes](trained-slopes.png)\n\n"
            "![trained SNR vs K](trained-snr.png)\n",
            "### Heavy tails: is the slope noise?\n\n"
            f"Gradients at a trained model, DReG's above all, can be heavy-tailed over draws: a few huge draws then set "
            f"the SNR and the slope is noise. With {p['draws']} draws per K, the bootstrap interval width of each x's "
            f"slope is below. The check used: the median-of-means SNR (the {p['draws']} draws in {MOM_GROUPS} groups, "
            "|median of group means| / sqrt(median of group variances) per parameter, then the median over parameters; "
            "validated in tests/test_gradvar.py: equal to the SNR on Gaussian draws, unmoved where 1 draw in 2000 is "
            "1000 times the size and the plain SNR collapses) beside the plain SNR's median over parameters: where the "
            "median-of-means slope falls inside the median-SNR slope's bootstrap interval, rare huge draws do not drive "
            "the slope; where it does not, the draws' shape changes with K (heavy tails at small K) and the plain slope "
            "carries them. Slopes over seeds (t-intervals of each seed's mean over its x).\n\n" + "\n".join(check) + "\n",
            "### Is the asymptotic regime reached?\n\n"
            f"ESS / K of K importance weights at each test x and each K (Kong 1992), the mean over {p['ess_repeats']} "
            f"independent sets. An x is in the regime when ESS / K >= {ESS_REGIME} at every K of the sweep (up to K = {big}); "
            "below it a few weights dominate the bound and its gradient, and the slopes are not expected. ESS / K levels "
            "off at 1 / (1 + Var w / (E w)^2) once K resolves the weights' spread; the ratio of the last two columns "
            "says how far it still falls at the largest K (1: levelled off; the further below 1, the further K is from "
            "the large-K limit the slopes are asymptotic in).\n\n"
            + "\n".join(ess_rows) + "\n",
        ]
        figures = {"trained-slopes.png": self._figure(keys, slopes, xs, "trained IWAE: SNR slopes over seeds"),
                   "trained-snr.png": self._snr_figure(keys, xs, names, regime)}
        return {"verdict": verdict, "why": why, "numbers": numbers, "sections": sections, "figures": figures}

    @staticmethod
    def _slope_rows(keys: list[str], slopes: dict, fits: list[dict], names: list[str] | None = None) -> list[str]:
        rows = ["| estimator.network | slope over seeds | expected | per x (bootstrap interval) |", "|---|---:|---:|---|"]
        for k in keys:
            exp = EXPECTED.get(tuple(k.split(".")))
            per = "; ".join(("" if names is None else f"x{n}: ") + f"{f[k]['slope']:.3f} [{f[k]['lo']:.3f}, {f[k]['hi']:.3f}]"
                            for n, f in zip(names or [""] * len(fits), fits))
            rows.append(f"| {k} | {iv.fmt(slopes[k])} | {'not falling' if exp is None else f'{exp:+.1f}'} | {per} |")
        return rows

    @staticmethod
    def _figure(keys: list[str], slopes: dict, fits: list[dict], title: str) -> bytes:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.5, 0.5 * len(keys) + 1.2))
        for i, k in enumerate(keys):
            s = slopes[k]
            ax.errorbar([s["mean"]], [i], xerr=[[s["mean"] - s["lo"]], [s["hi"] - s["mean"]]], fmt="o", capsize=4, color="#2471a3")
            ax.scatter([f[k]["slope"] for f in fits], [i + 0.15] * len(fits), s=10, color="#888888")
            exp = EXPECTED.get(tuple(k.split(".")))
            if exp is not None:
                ax.scatter([exp], [i], marker="|", s=300, color="#c0392b")
        ax.set_yticks(range(len(keys)), keys)
        ax.set(xlabel="log-log slope of SNR vs K (red: expected; grey: each x)", title=title)
        ax.grid(alpha=0.3)
        return to_png(fig)

    @staticmethod
    def _snr_figure(keys: list[str], fits: list[dict], names: list[str], regime: list[bool]) -> bytes:
        plt = pyplot()
        fig, axes = plt.subplots(2, (len(keys) + 1) // 2, figsize=(8.5, 6.5), squeeze=False)
        for ax, k in zip(axes.flat, keys):
            for n, f, ok in zip(names, fits, regime):
                pts = f[k]["snr"]
                ax.plot([q["K"] for q in pts], [q["value"] for q in pts], marker="o", ms=3, ls="-" if ok else ":",
                        label=f"x{n}" + ("" if ok else " (ESS low)"))
            exp = EXPECTED.get(tuple(k.split(".")), 0.0)
            ks = [q["K"] for q in fits[0][k]["snr"]]
            start = sorted(f[k]["snr"][0]["value"] for f in fits)[len(fits) // 2]  # the reference starts at the median x
            ax.plot(ks, [start * (kk / ks[0]) ** exp for kk in ks], color="black", ls="--", lw=1,
                    label="slope 0 (not falling)" if k == "dreg.encoder" else f"slope {exp:+.1f}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set(xlabel="K", ylabel="mean SNR over parameters", title=k)
            ax.grid(alpha=0.3, which="both")
        axes.flat[0].legend(fontsize=6)
        fig.suptitle("trained IWAE: SNR vs K at each test x (dotted: regime not reached; dashed: theory's slope)", fontsize=9)
        fig.tight_layout()
        return to_png(fig)


STUDY = RainforthSNR()
