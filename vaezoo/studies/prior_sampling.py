"""``prior-sampling``: an autoencoder's prior samples fall where its decoder was never trained; a VAE's do not.

The tutorial: "if you pick z = [10, 10, 10], the decoder has never seen this region. It outputs garbage" for an
AE, while the VAE's KL term keeps "everything in a compact region near N(0, I)". Measured with the same
networks for both (only the objective differs): the MMD between the codes the decoder was trained on and
prior draws (``vaezoo.studies.measures.prior_mmd``, validated on controls first, shown in the report), the
nearest-neighbour distance of decoded prior samples to the test set, and grids of prior samples.
"""

from __future__ import annotations

import torch

from vaezoo.studies import intervals as iv
from vaezoo.studies.base import Job, JobContext, Report, Study
from vaezoo.studies.figures import image_grid, interval_bars
from vaezoo.studies.measures import nn_distance, prior_mmd, prior_mmd_controls, prior_mmd_null
from vaezoo.studies.training import study_data, train_variant, variant_jobs

VARIANTS = {"ae": ({"name": "ae"}, {}), "vae": ({"name": "vae"}, {"beta": 1.0})}
NULL_REPEATS = 20  # repeats of the exact-prior control: enough to see a test's size, not one draw's luck
NEAR_IDEAL = 0.01  # |MMD^2| of exact N(0, I) codes stays below this; the far controls score > 0.1 (d = 2..64)
FAR_CONTROLS = ("N(0, 21 I)", "N(0, 0.01 I)")  # must score > 10 x NEAR_IDEAL; the half-collapsed one is shown only


@torch.no_grad()
def codes(model, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Where the decoder was trained: f(x) for an AE, one z ~ q(z|x) per x for a VAE (the aggregate posterior)."""
    q = model.encode(x)
    if not model.stochastic:
        return q.mu
    return q.mu + q.sigma * torch.randn(q.mu.shape, generator=generator)


class PriorSampling(Study):
    name = "prior-sampling"
    claim = ("An autoencoder's prior samples z ~ N(0, I) land where its decoder was never trained (garbage); "
             "a beta = 1 VAE with the same networks keeps its codes where the prior samples, so its samples are images.")
    source = "the tutorial (../shared/seed/vae-tutorial.txt), 'the decoder has never seen this region'"
    presets = {
        "tiny": {"dataset": "digits", "hidden": (64, 32), "latent_dim": 4, "steps": 300, "n_codes": 300,
                 "permutations": 100, "seeds": 3},
        "quick": {"dataset": "digits", "hidden": (256, 128), "latent_dim": 8, "steps": 3000, "n_codes": 500,
                  "permutations": 200, "seeds": 3},
        "full": {"dataset": "mnist5k", "hidden": (512, 256), "latent_dim": 32, "steps": 10000, "n_codes": 1000,
                 "permutations": 500, "seeds": 5},
    }

    def jobs(self, params: dict, seeds: list[int]) -> list[Job]:
        return variant_jobs(VARIANTS, params, seeds)

    def run_job(self, job: Job, ctx: JobContext) -> dict:
        params = job.payload["params"]
        model, data, final = train_variant(job, ctx, VARIANTS)
        g = torch.Generator().manual_seed(10_000 + job.seed)
        mmd = prior_mmd(codes(model, data.train, g), g, params["n_codes"], params["permutations"])
        samples = model.sample(500, generator=g)
        grid_path = ctx.runs_dir / f"{job.key.replace('/', '-')}-prior-samples.png"
        grid_path.write_bytes(image_grid(samples[:64].numpy()))
        return {"mmd2": mmd["mmd2"], "p_value": mmd["p_value"], "null_sd": mmd["null_sd"],
                "nn_distance": nn_distance(samples, data.test_raw),
                "test_bound": final.get("test_elbo", final.get("test_recon")), "_grid": str(grid_path)}

    def analyse(self, params: dict, seeds: list[int], results: dict[str, dict]) -> Report:
        controls = prior_mmd_controls(params["latent_dim"], torch.Generator().manual_seed(0), params["n_codes"],
                                      params["permutations"])
        null = prior_mmd_null(params["latent_dim"], torch.Generator().manual_seed(1), NULL_REPEATS, params["n_codes"],
                              params["permutations"])
        valid = (abs(controls["N(0, I)"]["mmd2"]) < NEAR_IDEAL and null["rejected"]["lo"] <= null["alpha"]
                 and all(controls[label]["mmd2"] > 10 * NEAR_IDEAL for label in FAR_CONTROLS))
        per = {v: {m: [results[f"{v}/seed{s}"][m] for s in seeds] for m in ("mmd2", "nn_distance", "test_bound", "p_value")}
               for v in VARIANTS}
        stats = {v: {m: iv.t_interval(per[v][m]) for m in ("mmd2", "nn_distance", "test_bound")} for v in VARIANTS}
        diff = iv.paired(per["ae"]["mmd2"], per["vae"]["mmd2"])
        every_seed = all(a > b for a, b in zip(per["ae"]["mmd2"], per["vae"]["mmd2"]))
        real = self._real_reference(params)
        verdict, why = self._verdict(valid, diff, every_seed)
        numbers = {"controls": controls, "null_repeats": null, "controls_valid": valid, "models": stats, "mmd2_ae_minus_vae": diff,
                   "ae_worse_on_every_seed": every_seed, "real_nn_distance": real}
        bars = [(f"control {k}", {"mean": c["mmd2"], "lo": float("nan"), "hi": float("nan")}) for k, c in controls.items()]
        bars += [(f"{v.upper()} codes", stats[v]["mmd2"]) for v in VARIANTS]
        figures = {"mmd.png": interval_bars(bars, "MMD^2 to N(0, I) (0 = prior samples fall where the decoder was trained)",
                                            "Codes vs the prior: controls and models")}
        for v in VARIANTS:
            with open(results[f"{v}/seed{seeds[0]}"]["_grid"], "rb") as fh:
                figures[f"{v}-prior-samples.png"] = fh.read()
        return Report(verdict, why, self._sections(params, controls, null, stats, per, diff, real, seeds), numbers, figures)

    @staticmethod
    def _real_reference(params: dict) -> dict:
        """Nearest-neighbour distances of two references: real training images (what real looks like) and the
        mean training image repeated (a blur, which L2 distances favour)."""
        data = study_data(params["dataset"], "dynamic")
        mean = data.train_raw.mean(0, keepdim=True)
        return {"train_images": nn_distance(data.train_raw[:500], data.test_raw), "mean_image": nn_distance(mean, data.test_raw)}

    @staticmethod
    def _verdict(valid: bool, diff: dict, every_seed: bool) -> tuple[str, str]:
        if not valid:
            return "depends", "the MMD measure failed its controls at this setting, so no model is judged by it."
        where = iv.direction(diff)
        if where == "above" and every_seed:
            return "holds", (f"the AE's codes lie farther from N(0, I) than the VAE's on every seed (MMD^2 AE - VAE = "
                             f"{iv.fmt(diff, 4)}), while exact N(0, I) codes score near 0 and the far controls do not.")
        if where == "below":
            return "does not hold", f"the VAE's codes lie farther from the prior than the AE's (AE - VAE = {iv.fmt(diff, 4)})."
        return "depends", f"the AE - VAE difference in MMD^2 is {iv.fmt(diff, 4)}: not clear at these seeds."

    @staticmethod
    def _sections(params, controls, null, stats, per, diff, real, seeds) -> list[str]:
        rows = ["| codes | MMD^2 to N(0, I) | permutation p-value | null sd |", "|---|---:|---:|---:|"]
        rows += [f"| control: {k} | {c['mmd2']:.4f} | {c['p_value']:.3f} | {c['null_sd']:.4f} |" for k, c in controls.items()]
        control_text = (
            "## The measure and its controls\n\n"
            "Codes the decoder was trained on (the aggregate posterior: f(x) for the AE, one z ~ q(z|x) per training "
            "image for the VAE) against fresh draws from the prior N(0, I): the unbiased squared maximum mean "
            "discrepancy (Gretton et al. 2012), Gaussian kernel with h^2 = d (the latent size; fixed by the prior, so "
            f"all models share one scale), {params['n_codes']} codes vs {params['n_codes']} prior draws, and a "
            f"permutation p-value ({params['permutations']} shufflings). 0 is the ideal. Before any model is scored, "
            f"the measure is run on codes whose answer is known (d = {params['latent_dim']}): exact N(0, I) must score "
            f"near 0 (|MMD^2| < {NEAR_IDEAL}), too wide and too narrow codes far from it (> {10 * NEAR_IDEAL}); codes "
            "with half the units always 0 (an AE-like sheet inside the prior's support) are shown for scale.\n\n"
            + "\n".join(rows) + "\n\n"
            f"One fixed draw of the exact-prior control can land in the test's tail, so it is also repeated: {NULL_REPEATS} "
            f"independent sets of N(0, I) codes, each against fresh prior draws. A calibrated test rejects about "
            f"{null['alpha']:g} of them; it rejected {null['rejected']['hits']} of {null['rejected']['n']} "
            f"(share {null['rejected']['share']:.2f}, exact 95% interval [{null['rejected']['lo']:.3f}, "
            f"{null['rejected']['hi']:.3f}]), and their mean MMD^2 is {iv.fmt(null['mmd2'], 4)} (0 for an unbiased "
            "estimate). The measure counts as validated when the single controls fall where stated and this "
            "interval does not lie above the test's level.\n\n"
            + "![MMD of controls and models](mmd.png)\n")
        m = ["| model | MMD^2 to N(0, I) | p-values per seed | NN distance of samples to test | test bound (nats) |",
             "|---|---:|---|---:|---:|"]
        for v in VARIANTS:
            ps = ", ".join(f"{p:.3f}" for p in per[v]["p_value"])
            m.append(f"| {v.upper()} | {iv.fmt(stats[v]['mmd2'], 4)} | {ps} | {iv.fmt(stats[v]['nn_distance'])} | "
                     f"{iv.fmt(stats[v]['test_bound'], 2)} |")
        models = (
            "## AE vs VAE, same networks\n\n"
            f"{params['dataset']}, MLP {'-'.join(map(str, params['hidden']))}, latent {params['latent_dim']}, "
            f"{params['steps']} steps, Bernoulli decoder on logits; the AE is trained on reconstruction only, the VAE on "
            "the ELBO (beta = 1). Test bound: reconstruction log-likelihood for the AE, the ELBO for the VAE.\n\n"
            + "\n".join(m) + f"\n\nPaired difference AE - VAE in MMD^2 (same seed): {iv.fmt(diff, 4)}.\n\n"
            "Sample quality: mean Euclidean distance (pixels in [0, 1]) from each of 500 decoded prior samples (Bernoulli "
            f"means) to its nearest test image. References: real training images score {real['train_images']:.3f}; the "
            f"mean training image repeated (a blur, which L2 favours) scores {real['mean_image']:.3f}. L2 rewards blur, "
            "so this number is a weak judge of quality; the MMD and the grids carry the verdict.\n")
        grids = (f"## Prior samples (seed {seeds[0]})\n\n| AE | VAE |\n|---|---|\n| ![AE prior samples](ae-prior-samples.png) | "
                 "![VAE prior samples](vae-prior-samples.png) |\n")
        return [control_text, models, grids]


STUDY = PriorSampling()
