"""``samples-per-z``: at equal compute, one z-sample per image is enough.

The tutorial: "1 z sample per image x batch of images = enough signal". Equal compute here means a fixed
number of decoder passes per step, B x K: K = 1, 4, 16 z-samples per image with B = budget / K images, the same
number of steps, trained on the K-sample ELBO (1/K sum_k log w_k: the ELBO's gradient with K-fold less latent
noise) and, for contrast, on the IWAE bound (a different, tighter objective). Judged on the test ELBO and the
importance-sampled log-likelihood, with intervals over seeds and paired (same-seed) differences from K = 1.
"""

from __future__ import annotations

from vaezoo.core.errors import VaezooError
from vaezoo.studies import intervals as iv
from vaezoo.studies.base import Job, JobContext, Report, Study
from vaezoo.studies.figures import pyplot, to_png
from vaezoo.studies.training import study_data, train_job, user_config

MARGIN = 0.5  # nats: K = 1 "is enough" when it is at most this much below K > 1 (the interval's lower end)


def arms(params: dict) -> list[tuple[str, int]]:
    """(bound, K) of each arm; K = 1 is the same training for both bounds, so it appears once."""
    out = [("elbo", 1)]
    for bound in ("elbo", "iwae"):
        out += [(bound, k) for k in params["ks"] if k > 1]
    return out


def label(bound: str, k: int) -> str:
    return "K=1" if k == 1 else f"{'K-sample ELBO' if bound == 'elbo' else 'IWAE'} K={k}"


class SamplesPerZ(Study):
    name = "samples-per-z"
    claim = ("One z-sample per image is enough: at equal compute (B x K fixed), K = 1 with more images per batch "
             "trains a VAE as well as K = 4 or 16 z-samples per image.")
    source = "the tutorial (../shared/seed/vae-tutorial.txt), '1 z sample per image x batch of images = enough signal'"
    presets = {
        "tiny": {"dataset": "digits", "hidden": (64, 32), "latent_dim": 4, "steps": 300, "budget": 64, "ks": (1, 4, 16),
                 "is_samples": 200, "seeds": 3},
        "quick": {"dataset": "digits", "hidden": (256, 128), "latent_dim": 8, "steps": 3000, "budget": 128,
                  "ks": (1, 4, 16), "is_samples": 1000, "seeds": 3},
        "full": {"dataset": "mnist5k", "hidden": (512, 256), "latent_dim": 32, "steps": 20000, "budget": 256,
                 "ks": (1, 4, 16), "is_samples": 5000, "seeds": 5},
    }

    def jobs(self, params: dict, seeds: list[int]) -> list[Job]:
        if any(params["budget"] % k for k in params["ks"]) or 1 not in params["ks"]:
            raise VaezooError(f"samples-per-z needs K = 1 and every K to divide the budget {params['budget']}, got {params['ks']}")
        return [Job(f"{bound}-k{k}/seed{s}", s, {"bound": bound, "k": k, "params": params})
                for bound, k in arms(params) for s in seeds]

    def run_job(self, job: Job, ctx: JobContext) -> dict:
        from vaezoo.training.evaluate import evaluate

        params, bound, k = job.payload["params"], job.payload["bound"], job.payload["k"]
        user = user_config(params, job.seed, {"name": "vae"}, {"bound": bound, "k": k}, batch_size=params["budget"] // k)
        model, cfg, _ = train_job(job, ctx, user)
        data = study_data(cfg.data.name, cfg.data.binarize)
        ev = evaluate(model, data.test, k=64, is_samples=params["is_samples"], seed=job.seed)
        return {key: ev[key] for key in ("elbo", "iwae_k64", "ll_is", "ll_is_mc_se", "active_units", "kl")}

    def analyse(self, params: dict, seeds: list[int], results: dict[str, dict]) -> Report:
        metrics = ("elbo", "ll_is", "active_units")
        per = {(b, k): {m: [results[f"{b}-k{k}/seed{s}"][m] for s in seeds] for m in (*metrics, "ll_is_mc_se")}
               for b, k in arms(params)}
        stats = {label(*a): {m: iv.t_interval(per[a][m]) for m in metrics} for a in per}
        diffs = {label(*a): {m: iv.paired(per[("elbo", 1)][m], per[a][m]) for m in ("elbo", "ll_is")}
                 for a in per if a != ("elbo", 1)}
        elbo_arms = [label("elbo", k) for k in params["ks"] if k > 1]
        worse = [a for a in elbo_arms if any(diffs[a][m]["hi"] < 0 for m in ("elbo", "ll_is"))]
        close = all(diffs[a][m]["lo"] > -MARGIN for a in elbo_arms for m in ("elbo", "ll_is"))
        text = "; ".join(f"K=1 - {a}: ELBO {iv.fmt(diffs[a]['elbo'], 2)}, IS LL {iv.fmt(diffs[a]['ll_is'], 2)}" for a in elbo_arms)
        if worse:
            verdict, why = "does not hold", f"K = 1 trains worse than {', '.join(worse)} at equal compute ({text})."
        elif close:
            verdict, why = "holds", (f"at equal compute K = 1 is within {MARGIN} nats of (or better than) every K-sample ELBO "
                                     f"arm on the test ELBO and the IS log-likelihood ({text}).")
        else:
            verdict, why = "depends", f"no arm is significantly better or worse, but the intervals are wider than {MARGIN} nats ({text})."
        numbers = {"models": stats, "k1_minus": diffs, "margin_nats": MARGIN,
                   "max_ll_is_mc_se": max(max(per[a]["ll_is_mc_se"]) for a in per)}
        return Report(verdict, why, self._sections(params, stats, diffs, numbers), numbers, {"bounds.png": self._figure(params, stats)})

    @staticmethod
    def _figure(params: dict, stats: dict) -> bytes:
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        for ax, m, title in zip(axes, ("elbo", "ll_is"), ("test ELBO", f"IS log-likelihood (S = {params['is_samples']})")):
            for bound, colour in (("elbo", "#2471a3"), ("iwae", "#c0392b")):
                ks = [1, *[k for k in params["ks"] if k > 1]]
                ivs = [stats[label(bound, k)][m] for k in ks]
                ax.errorbar(ks, [v["mean"] for v in ivs], yerr=[[v["mean"] - v["lo"] for v in ivs], [v["hi"] - v["mean"] for v in ivs]],
                            marker="o", capsize=3, color=colour, label="K-sample ELBO" if bound == "elbo" else "IWAE")
            ax.set_xscale("log", base=2)
            ax.set(xlabel=f"K (B = {params['budget']} / K)", ylabel="nats", title=title)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        return to_png(fig)

    @staticmethod
    def _sections(params: dict, stats: dict, diffs: dict, numbers: dict) -> list[str]:
        rows = ["| training | B | test ELBO | IS log-likelihood | active units |", "|---|---:|---:|---:|---:|"]
        for name, st in stats.items():
            k = 1 if name == "K=1" else int(name.rsplit("=", 1)[1])
            rows.append(f"| {name} | {params['budget'] // k} | {iv.fmt(st['elbo'], 2)} | {iv.fmt(st['ll_is'], 2)} | "
                        f"{iv.fmt(st['active_units'], 1)} |")
        drows = ["| K=1 minus | test ELBO | IS log-likelihood |", "|---|---:|---:|"]
        drows += [f"| {a} | {iv.fmt(d['elbo'], 2)} | {iv.fmt(d['ll_is'], 2)} |" for a, d in diffs.items()]
        return [
            "## Equal compute\n\n"
            f"{params['dataset']}, MLP {'-'.join(map(str, params['hidden']))}, latent {params['latent_dim']}, "
            f"{params['steps']} steps each, B x K = {params['budget']} decoder passes per step. Test ELBO (analytic KL) and "
            f"importance-sampled log-likelihood (S = {params['is_samples']}; its largest Monte Carlo s.e. over all models is "
            f"{numbers['max_ll_is_mc_se']:.3f} nats, to set beside the seed intervals), in nats per image.\n\n"
            + "\n".join(rows) + "\n\n![bounds](bounds.png)\n",
            "## Paired differences from K = 1 (same seed)\n\nPositive: K = 1 is better.\n\n" + "\n".join(drows)
            + "\n\nThe IWAE arms optimise a different, tighter bound; they are shown for contrast, not judged by the claim.\n",
        ]


STUDY = SamplesPerZ()
