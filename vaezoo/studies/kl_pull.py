"""``kl-pull``: the KL term pulls each unit's mu towards 0 and sigma towards 1 -- for which units?

The tutorial: KL(q || N(0, I)) "pushes the encoder to output mu ~ 0 and sigma ~ 1" (its penalty table: mu^2
grows away from 0, sigma^2 - log sigma^2 away from 1). The reconstruction term pulls the other way for every unit
the decoder uses. So the per-unit statistics are watched *during* training: at every ``eval_every`` step an
observer (``vaezoo.training.train``'s ``observe``) records, for each latent unit j over fixed image sets (a seeded
subset of training images and the test set), the mean and spread over x of mu_j(x), the mean of sigma_j(x) and of
sigma_j(x)^2, the largest |mu_j| and the largest and smallest sigma_j; step 0 is the seeded initial model. At the
end the units are split by Burda et al.'s criterion (Cov_x(mu_j) > 0.01 on the test set: active; otherwise
collapsed; ``vaezoo.training.collapse``) and the two groups are reported apart, since an average over both hides
what happens per unit. Models: a beta = 1 VAE; beta = 0 (the control: the same networks with the pull absent,
sigma free) and a high-beta VAE (most units collapse), same networks, same seeds.
"""

from __future__ import annotations

import torch

from vaezoo.studies import intervals as iv
from vaezoo.studies.base import Job, JobContext, Report, Study
from vaezoo.studies.figures import interval_points, pyplot, to_png
from vaezoo.studies.training import study_data, train_job, user_config

STATS = ("mu_mean", "mu_sd", "sigma_mean", "sigma_sq_mean", "max_abs_mu", "sigma_max", "sigma_min")
GROUPS = ("active", "collapsed")
NEAR = 0.1  # "at the prior": mean sigma within 0.1 of 1 and |E_x mu| below 0.1 (collapsed units' sd_x mu < 0.1 anyway)
COLOURS = {"active": "#c0392b", "collapsed": "#2b5d9b"}


def slug(beta: float) -> str:
    return f"beta{beta:g}"


@torch.no_grad()
def unit_stats(model, x: torch.Tensor) -> dict[str, list[float]]:
    """Per latent unit j over the images ``x``: mean and sd (unbiased, as Burda's Cov_x) of mu_j(x), mean of
    sigma_j(x) and sigma_j(x)^2, the largest |mu_j(x)|, the largest and smallest sigma_j(x)."""
    q = model.encode(x)
    mu, sigma = q.mu.double(), q.sigma.double()
    values = {"mu_mean": mu.mean(0), "mu_sd": mu.std(0), "sigma_mean": sigma.mean(0), "sigma_sq_mean": sigma.pow(2).mean(0),
              "max_abs_mu": mu.abs().amax(0), "sigma_max": sigma.amax(0), "sigma_min": sigma.amin(0)}
    return {k: [round(float(v), 6) for v in values[k]] for k in STATS}


class Snapshots:
    """The observer: at each evaluation, ``unit_stats`` on every fixed image set; changes nothing in the model."""

    def __init__(self, sets: dict[str, torch.Tensor]) -> None:
        self.sets = sets
        self.steps: list[int] = []
        self.stats: dict[str, list[dict]] = {name: [] for name in sets}

    def __call__(self, step: int, model, metrics: dict) -> None:
        training = model.training  # the loop hands over its training-mode model: encode as evaluation does
        model.eval()
        self.steps.append(step)
        for name, x in self.sets.items():
            self.stats[name].append(unit_stats(model, x))
        model.train(training)


def initial_model(cfg):
    """The seeded model ``train`` starts from (the same ``build``), for the step-0 snapshot."""
    from vaezoo.data import load_dataset
    from vaezoo.training.loop import build

    return build(cfg, load_dataset(cfg.data), torch.device("cpu"))[0].eval()


def group_summary(final: dict, active: list[bool], group: str) -> dict | None:
    """One seed's final snapshot over the units of ``group``: means over units of |E_x mu_j|, sd_x mu_j, E_x sigma_j
    (and its smallest unit) and the aggregate variance Var_x mu_j + E_x sigma_j^2 (1 where q(z_j) = N(0, 1)), the
    extremes over the group's units and images, and how many units it has; None where it has none."""
    units = [j for j, a in enumerate(active) if a == (group == "active")]
    if not units:
        return None
    used = min(units, key=lambda j: final["sigma_mean"][j])
    return {
        "units": len(units),
        "units_off_prior": sum(abs(final["sigma_mean"][j] - 1) > NEAR for j in units),
        "abs_mu_mean": _mean([abs(final["mu_mean"][j]) for j in units]),
        "mu_sd": _mean([final["mu_sd"][j] for j in units]),
        "sigma_mean": _mean([final["sigma_mean"][j] for j in units]),
        "sigma_mean_lowest_unit": final["sigma_mean"][used],  # the unit the decoder leans on most
        "mu_sd_lowest_unit": final["mu_sd"][used],
        "aggregate_var": _mean([final["mu_sd"][j] ** 2 + final["sigma_sq_mean"][j] for j in units]),
        "max_abs_mu": max(final["max_abs_mu"][j] for j in units),
        "sigma_max": max(final["sigma_max"][j] for j in units),
        "sigma_min": min(final["sigma_min"][j] for j in units),
    }


class KLPull(Study):
    name = "kl-pull"
    claim = ("The KL term pulls each latent unit's mu(x) towards 0 and sigma(x) towards 1 (for all inputs, mu ~ 0 and "
             "sigma ~ 1).")
    source = "the tutorial (../shared/seed/vae-tutorial.txt), 'This pushes the encoder to output mu ~ 0 and sigma ~ 1'"
    presets = {
        "tiny": {"dataset": "digits", "hidden": (64, 32), "latent_dim": 8, "steps": 1500, "eval_every": 250,
                 "betas": (0.0, 1.0, 4.0), "probe": 300, "seeds": 3},
        "quick": {"dataset": "digits", "hidden": (256, 128), "latent_dim": 16, "steps": 3000, "eval_every": 150,
                  "betas": (0.0, 1.0, 4.0), "probe": 1000, "seeds": 3},
        "full": {"dataset": "mnist5k", "hidden": (512, 256), "latent_dim": 32, "steps": 10000, "eval_every": 250,
                 "betas": (0.0, 1.0, 8.0), "probe": 2000, "seeds": 5},
    }

    def jobs(self, params: dict, seeds: list[int]) -> list[Job]:
        return [Job(f"{slug(b)}/seed{s}", s, {"beta": b, "params": params}) for b in params["betas"] for s in seeds]

    def run_job(self, job: Job, ctx: JobContext) -> dict:
        from vaezoo.training import resolve_for_dataset
        from vaezoo.training.collapse import active_mask
        from vaezoo.training.evaluate import posterior_stats

        params = job.payload["params"]
        user = user_config(params, job.seed, {"name": "vae"}, {"beta": job.payload["beta"]})
        cfg = resolve_for_dataset(user)
        data = study_data(cfg.data.name, cfg.data.binarize)
        # the same training images for every job and snapshot (a fixed draw, not the job's seed)
        probe = data.train[torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[: params["probe"]]]
        watch = Snapshots({"train": probe, "test": data.test})
        watch(0, initial_model(cfg), {})
        model, _, final = train_job(job, ctx, user, observe=watch)
        stats = posterior_stats(model, data.test)
        active = active_mask(torch.tensor(stats["mu_variance_per_unit"])).tolist()
        test = watch.stats["test"]
        # study.json keeps every step's spread and sigma (the figures), the extremes over all steps, and the full
        # statistics of the last snapshot (the verdict's); all of them for every step would be ~1 MB per report
        return {"steps": watch.steps,
                "trajectory": {k: [[round(v, 4) for v in snap[k]] for snap in test] for k in ("mu_sd", "sigma_mean")},
                "final": {name: snaps[-1] for name, snaps in watch.stats.items()},
                "ever": {"max_abs_mu": max(max(snap["max_abs_mu"]) for snap in test),
                         "sigma_max": max(max(snap["sigma_max"]) for snap in test),
                         "sigma_min": min(min(snap["sigma_min"]) for snap in test)},
                "active": active, "active_units": stats["active_units"],
                "kl": stats["kl"], "kl_per_unit": stats["kl_per_unit"], "test_elbo": final["test_elbo"]}

    def analyse(self, params: dict, seeds: list[int], results: dict[str, dict]) -> Report:
        betas = list(params["betas"])
        high = max(betas)
        per = {}  # beta -> set -> group -> measure -> t-interval over the seeds that have such units
        for b in betas:
            runs = [results[f"{slug(b)}/seed{s}"] for s in seeds]
            per[slug(b)] = {}
            for name in ("train", "test"):
                rows = {g: [group_summary(r["final"][name], r["active"], g) for r in runs] for g in GROUPS}
                per[slug(b)][name] = {g: _intervals([x for x in rows[g] if x is not None]) for g in GROUPS}
            per[slug(b)]["active_units"] = iv.t_interval([r["active_units"] for r in runs])
            per[slug(b)]["collapsed_units"] = iv.t_interval([len(r["active"]) - r["active_units"] for r in runs])
            per[slug(b)]["kl"] = iv.t_interval([r["kl"] for r in runs])
            # every unit's sigma at the initial model and at the first snapshot after it: where the pull acts first
            for i, label in ((0, "sigma_all_units_step0"), (1, "sigma_all_units_first_snapshot")):
                per[slug(b)][label] = iv.t_interval([_mean(r["trajectory"]["sigma_mean"][i]) for r in runs])
            per[slug(b)]["largest_abs_mu_ever"] = max(r["ever"]["max_abs_mu"] for r in runs)
            per[slug(b)]["largest_sigma_ever"] = max(r["ever"]["sigma_max"] for r in runs)
        checks = self._checks(per, betas, high)
        verdict, why = self._verdict(checks, per, high, len(seeds))
        figures = {"trajectories.png": self._trajectories(betas, seeds, results),
                   "final-sigma.png": self._final_sigma(betas, per), "units.png": self._units(betas, seeds, results)}
        numbers = {"models": per, "checks": checks, "near": NEAR}
        return Report(verdict, why, self._sections(params, betas, per, checks), numbers, figures)

    @staticmethod
    def _checks(per: dict, betas: list[float], high: float) -> dict:
        """The measure on the control first (beta = 0: no pull, so no unit should sit at sigma ~ 1), then where the
        collapsed and the active units of the beta = 1 VAE (and the high-beta one's collapsed units) sit."""

        def at_prior(g):
            return g is not None and g["n"] >= 2 and 1 - NEAR <= g["sigma_mean"]["lo"] and g["sigma_mean"]["hi"] <= 1 + NEAR \
                and g["abs_mu_mean"]["hi"] < NEAR

        def below(g, key="sigma_mean"):
            return g is not None and g["n"] >= 2 and g[key]["hi"] < 1 - NEAR

        def below_lowest(g):  # even one unit per seed off the prior refutes "each unit"
            return below(g, "sigma_mean_lowest_unit")

        def at_prior_lowest(g):  # every unit at the prior: then the one with the smallest sigma is too
            return g is not None and g["n"] >= 2 and g["sigma_mean_lowest_unit"]["lo"] >= 1 - NEAR

        test = {b: per[slug(b)]["test"] for b in betas}
        control = test[0.0] if 0.0 in test else None
        return {
            "control_no_unit_at_prior": control is not None and control["collapsed"] is None
            and below(control["active"]),
            "beta1_collapsed_at_prior": at_prior(test[1.0]["collapsed"]),
            "beta1_most_used_unit_sigma_below_1": below_lowest(test[1.0]["active"]),
            "beta1_active_mean_sigma_below_1": below(test[1.0]["active"]),
            "beta1_most_used_unit_at_prior": at_prior_lowest(test[1.0]["active"]),
            "beta1_has_collapsed": test[1.0]["collapsed"] is not None and test[1.0]["collapsed"]["n"] >= 2,
            f"beta{high:g}_collapsed_at_prior": at_prior(test[high]["collapsed"]),
        }

    @staticmethod
    def _verdict(checks: dict, per: dict, high: float, n_seeds: int) -> tuple[str, str]:
        b1 = per["beta1"]["test"]

        def text(g, group):
            if g is None:
                return f"no {group} units"
            return (f"{group} units ({g['units']['mean']:.1f} per seed in {g['n']} seeds): mean sigma {iv.fmt(g['sigma_mean'], 2)}, "
                    f"|E mu| {iv.fmt(g['abs_mu_mean'], 2)}, sd_x mu {iv.fmt(g['mu_sd'], 2)}, aggregate variance "
                    f"{iv.fmt(g['aggregate_var'], 2)}")

        said = f"At beta = 1, {text(b1['active'], 'active')}; {text(b1['collapsed'], 'collapsed')}"
        if not checks["control_no_unit_at_prior"]:
            return "depends", (f"the control does not tell pull from no pull (beta = 0 leaves units near sigma = 1), so "
                               f"the measure is not validated here; {said}.")
        collapsed_ok = checks["beta1_collapsed_at_prior"] if checks["beta1_has_collapsed"] \
            else checks[f"beta{high:g}_collapsed_at_prior"]
        where = "" if checks["beta1_has_collapsed"] else f" (no collapsed unit at beta = 1; beta = {high:g}'s judged)"
        if collapsed_ok and checks["beta1_most_used_unit_at_prior"]:
            return "holds", f"every unit sits at mu ~ 0, sigma ~ 1{where}: {said}."
        if collapsed_ok and checks["beta1_most_used_unit_sigma_below_1"]:
            a = b1["active"]
            return "depends", (
                f"the pull wins for the collapsed units, which sit at mu ~ 0, sigma ~ 1{where}, not for the units the "
                f"decoder uses: each seed's most used unit keeps mean sigma {iv.fmt(a['sigma_mean_lowest_unit'], 2)} with "
                f"sd_x mu {iv.fmt(a['mu_sd_lowest_unit'], 2)} (the reconstruction wins); of the {a['units']['mean']:.1f} "
                f"Burda-active units per seed {a['units_off_prior']['mean']:.1f} sit off the prior (sigma < {1 - NEAR:g}), "
                f"the rest just past the threshold at sigma ~ 1, so the active group's mean sigma is "
                f"{iv.fmt(a['sigma_mean'], 2)}. Every unit's aggregate q(z_j) keeps mean ~ 0 and variance ~ 1 (active "
                f"{iv.fmt(a['aggregate_var'], 2)}): the pull holds for the aggregate, not per input. {said}.")
        if not collapsed_ok:
            return "does not hold", f"even the collapsed units do not sit at sigma ~ 1{where}: {said}."
        return "depends", f"the active units' sigma is neither at 1 nor resolved below it at {n_seeds} seeds: {said}."

    @staticmethod
    def _trajectories(betas: list[float], seeds: list[int], results: dict) -> bytes:
        plt = pyplot()
        fig, axes = plt.subplots(2, len(betas), figsize=(3.6 * len(betas), 5.6), sharex=True, squeeze=False)
        for col, b in enumerate(betas):
            for s in seeds:
                r = results[f"{slug(b)}/seed{s}"]
                path = r["trajectory"]
                for j, active in enumerate(r["active"]):
                    style = {"color": COLOURS["active" if active else "collapsed"], "alpha": 0.55, "lw": 0.9}
                    axes[0, col].plot(r["steps"], [x[j] for x in path["mu_sd"]], **style)
                    axes[1, col].plot(r["steps"], [x[j] for x in path["sigma_mean"]], **style)
            axes[0, col].set_title(f"beta = {b:g}" + (" (control: no pull)" if b == 0 else ""), fontsize=10)
            axes[1, col].set_xlabel("training step")
            for row in range(2):
                axes[row, col].axhline(1.0, color="grey", ls="--", lw=0.8)
                axes[row, col].grid(alpha=0.3)
        axes[0, 0].set_ylabel("sd over test x of mu_j(x)")
        axes[1, 0].set_ylabel("mean over test x of sigma_j(x)")
        handles = [plt.Line2D([], [], color=c, label=f"{g} at the end") for g, c in COLOURS.items()]
        fig.legend(handles=handles, loc="upper center", ncol=2, frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        return to_png(fig)

    @staticmethod
    def _units(betas: list[float], seeds: list[int], results: dict) -> bytes:
        """Every unit of every seed at the end: sd_x mu_j against E_x sigma_j, with the circle where the unit's
        aggregate posterior has the prior's variance (sd^2 + sigma^2 = 1, for sigma constant over x)."""
        import numpy as np

        plt = pyplot()
        fig, axes = plt.subplots(1, len(betas), figsize=(3.6 * len(betas), 3.4), squeeze=False)
        arc = np.linspace(0, np.pi / 2, 100)
        for ax, b in zip(axes[0], betas):
            for s in seeds:
                r = results[f"{slug(b)}/seed{s}"]
                last = r["final"]["test"]
                for j, active in enumerate(r["active"]):
                    ax.scatter(last["mu_sd"][j], last["sigma_mean"][j], s=14, alpha=0.7,
                               color=COLOURS["active" if active else "collapsed"])
            ax.plot(np.cos(arc), np.sin(arc), color="grey", ls="--", lw=0.8)
            ax.set(xlabel="sd over test x of mu_j(x)", title=f"beta = {b:g}")
            ax.grid(alpha=0.3)
        axes[0, 0].set_ylabel("mean over test x of sigma_j(x)")
        handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=g) for g, c in COLOURS.items()]
        fig.legend(handles=handles, loc="upper center", ncol=2, frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 0.9))
        return to_png(fig)

    @staticmethod
    def _final_sigma(betas: list[float], per: dict) -> bytes:
        rows = [(f"beta = {b:g}, {g} units", per[slug(b)]["test"][g]["sigma_mean"])
                for b in betas for g in GROUPS if per[slug(b)]["test"][g] is not None]
        return interval_points(rows, "mean over test x and the group's units of sigma_j(x)",
                               "Where sigma ends, active and collapsed units apart")

    @staticmethod
    def _sections(params: dict, betas: list[float], per: dict, checks: dict) -> list[str]:
        head = ("| beta | units | per seed (seeds with any) | off the prior | \\|E_x mu_j\\| | sd_x mu_j | E_x sigma_j | its lowest unit | "
                "Var_x mu_j + E_x sigma_j^2 | largest \\|mu_j\\| | sigma_j range |")
        rows = [head, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for b in betas:
            for g in GROUPS:
                st = per[slug(b)]["test"][g]
                count = iv.fmt(per[slug(b)][f"{g}_units"], 1)
                if st is None:
                    rows.append(f"| {b:g} | {g} | {count} (0) | | | | | | | | |")
                    continue
                rows.append(f"| {b:g} | {g} | {count} ({st['n']}) | {iv.fmt(st['units_off_prior'], 1)} | "
                            f"{iv.fmt(st['abs_mu_mean'], 3)} | "
                            f"{iv.fmt(st['mu_sd'], 3)} | {iv.fmt(st['sigma_mean'], 3)} | {iv.fmt(st['sigma_mean_lowest_unit'], 3)} | "
                            f"{iv.fmt(st['aggregate_var'], 3)} | "
                            f"{st['max_abs_mu']['mean']:.2f} | {st['sigma_min']['mean']:.3f} - {st['sigma_max']['mean']:.3f} |")
        train_rows = [f"beta = {b:g} {g}: {iv.fmt(per[slug(b)]['train'][g]['sigma_mean'], 3)}"
                      for b in betas for g in GROUPS if per[slug(b)]["train"][g] is not None]
        early = "; ".join(f"beta = {b:g}: {iv.fmt(per[slug(b)]['sigma_all_units_step0'], 2)} -> "
                          f"{iv.fmt(per[slug(b)]['sigma_all_units_first_snapshot'], 2)}" for b in betas)
        extremes = "; ".join(f"beta = {b:g}: |mu| {per[slug(b)]['largest_abs_mu_ever']:.2f}, sigma "
                             f"{per[slug(b)]['largest_sigma_ever']:.3f}" for b in betas)
        models = "; ".join(f"beta = {b:g}: KL {iv.fmt(per[slug(b)]['kl'], 2)} nats" for b in betas)
        return [
            "## Per-unit mu and sigma at the end, active and collapsed units apart\n\n"
            f"{params['dataset']}, MLP {'-'.join(map(str, params['hidden']))}, latent {params['latent_dim']}, "
            f"{params['steps']} steps, Bernoulli decoder on logits, loss -(E_q log p(x|z) - beta KL). A unit is active "
            "if Var_x mu_j(x) > 0.01 over the test set at the end (Burda et al. 2016), collapsed otherwise. Each row "
            "averages over the group's units within a seed, then gives the mean and 95% t-interval over the seeds that "
            "have such units (how many seeds, in brackets; a group absent from a seed is left out, not counted as 0). "
            f"'Off the prior': units per seed whose mean sigma is more than {NEAR:g} from 1; 'its lowest unit': the "
            "mean sigma of the group's unit with the smallest one (the one the decoder uses most). "
            "Var_x mu_j + E_x sigma_j^2 is the variance of the unit's aggregate posterior q(z_j): 1 where it matches "
            "the prior. The largest |mu_j| and the sigma range are over the group's units and test images, means over "
            f"seeds.\n\n" + "\n".join(rows) + f"\n\nTest KL per image: {models}.\n\nOn the fixed {params['probe']} training images, mean sigma: "
            + "; ".join(train_rows) + ".\n\n![final sigma](final-sigma.png)\n",
            "## Every unit at the end\n\n"
            "One point per unit and seed: the spread of its mean over the test images against its mean sigma. The dashed "
            "quarter circle is sd^2 + sigma^2 = 1, where the unit's aggregate posterior has the prior's variance. Units "
            "spread along it: the more a unit's mu varies with x, the smaller its sigma. Burda's threshold (sd > 0.1) "
            "counts units just past it as active although their sigma is still ~ 1, which is why the active group's mean "
            "sigma sits between its most used unit's and 1.\n\n![units](units.png)\n",
            "## Trajectories during training\n\n"
            f"Snapshots every {params['eval_every']} steps (step 0: the seeded initial model, sigma = softplus(.) ~ 0.69) "
            "taken by the training loop's observer; one line per unit and seed, coloured by the unit's class at the "
            f"end. Mean sigma over all units from step 0 to step {params['eval_every']}: {early}. Largest |mu_j(x)| "
            f"and sigma_j(x) seen on the test set at any snapshot: {extremes}. The tutorial's "
            "'mu = 9, sigma = 1000 ... doesn't happen because the loss prevents it' is read here against the beta = 0 "
            "row, where nothing prevents it.\n\n![trajectories](trajectories.png)\n",
            "## Checks\n\n"
            f"At the prior: mean sigma's interval within [{1 - NEAR:g}, {1 + NEAR:g}] and |E_x mu|'s below {NEAR:g}; "
            f"below 1: mean sigma's interval below {1 - NEAR:g}; both need the group in at least 2 seeds. The control "
            "(beta = 0) must have no unit at the prior, or the measure could not tell the pull from its absence.\n\n"
            + "\n".join(f"- {k}: {'yes' if v else 'no'}" for k, v in checks.items()) + "\n",
        ]


def _mean(values) -> float:
    return sum(values) / len(values)


def _intervals(rows: list[dict]) -> dict | None:
    """Each measure's t-interval over the seeds in ``rows`` (None where no seed has such units); 'n' the seeds."""
    if not rows:
        return None
    return {"n": len(rows), **{k: iv.t_interval([r[k] for r in rows]) for k in rows[0]}}


STUDY = KLPull()
