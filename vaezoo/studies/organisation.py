"""``organisation``: latent class structure comes from reconstruction, not from the KL term.

The tutorial: "Images that need similar features to reconstruct will share similar latents ... This would
happen in a regular autoencoder too! Reconstruction creates organization. KL just compresses it." Measured as
the k-nearest-neighbour class accuracy of the latent means mu(x) of test images against those of training
images, for an AE, a beta = 1 VAE and a beta-VAE with the same networks; controls: the pixels themselves (an
identity representation), a constant representation and shuffled labels (chance).
"""

from __future__ import annotations

import torch

from vaezoo.core.errors import VaezooError
from vaezoo.studies import intervals as iv
from vaezoo.studies.base import Job, JobContext, Report, Study
from vaezoo.studies.figures import interval_bars
from vaezoo.studies.measures import knn_accuracy
from vaezoo.studies.training import study_data, train_variant

VARIANTS = {
    "AE": ({"name": "ae"}, {}),
    "VAE (beta = 1)": ({"name": "vae"}, {"beta": 1.0}),
    "beta-VAE (beta = 4)": ({"name": "vae"}, {"beta": 4.0}),
}
SLUG = {"AE": "ae", "VAE (beta = 1)": "vae", "beta-VAE (beta = 4)": "beta4"}
K = 5
PIXELS = "binary pixels (the models' input)"
MARGIN = 0.05  # the AE "organises at least as well" when its accuracy is at most this much below the VAE's


@torch.no_grad()
def latent_means(model, x: torch.Tensor) -> torch.Tensor:
    return model.encode(x).mu


class Organisation(Study):
    name = "organisation"
    claim = ("Latent class organisation comes from reconstruction, not from the KL term: an autoencoder's codes "
             "separate classes at least as well as a VAE's.")
    source = "the tutorial (../shared/seed/vae-tutorial.txt), 'Reconstruction creates organization. KL just compresses it'"
    presets = {
        "tiny": {"dataset": "digits", "hidden": (64, 32), "latent_dim": 4, "steps": 300, "seeds": 3},
        "quick": {"dataset": "digits", "hidden": (256, 128), "latent_dim": 8, "steps": 3000, "seeds": 3},
        "full": {"dataset": "mnist5k", "hidden": (512, 256), "latent_dim": 32, "steps": 10000, "seeds": 5},
    }

    def jobs(self, params: dict, seeds: list[int]) -> list[Job]:
        if params["dataset"] not in ("digits", "mnist5k"):
            raise VaezooError(f"organisation needs class labels: dataset digits or mnist5k, got '{params['dataset']}'")
        return [Job(f"{SLUG[v]}/seed{s}", s, {"variant": v, "params": params}) for v in VARIANTS for s in seeds]

    def run_job(self, job: Job, ctx: JobContext) -> dict:
        model, data, final = train_variant(job, ctx, VARIANTS)
        acc = knn_accuracy(latent_means(model, data.train), data.labels["train"], latent_means(model, data.test),
                           data.labels["test"], K)
        return {"knn_accuracy": acc, "test_bound": final.get("test_elbo", final.get("test_recon"))}

    @staticmethod
    def controls(params: dict) -> dict:
        """k-NN accuracy where the answer is known: pixels (high), a constant representation and shuffled
        training labels (both near chance, 1/10)."""
        data = study_data(params["dataset"], "dynamic")
        ytr, yte = data.labels["train"], data.labels["test"]
        shuffled = ytr[torch.randperm(len(ytr), generator=torch.Generator().manual_seed(0))]
        return {
            PIXELS: knn_accuracy(data.train, ytr, data.test, yte, K),
            "constant": knn_accuracy(torch.zeros(len(ytr), 1), ytr, torch.zeros(len(yte), 1), yte, K),
            "pixels, shuffled labels": knn_accuracy(data.train, shuffled, data.test, yte, K),
        }

    def analyse(self, params: dict, seeds: list[int], results: dict[str, dict]) -> Report:
        per = {v: {m: [results[f"{SLUG[v]}/seed{s}"][m] for s in seeds] for m in ("knn_accuracy", "test_bound")}
               for v in VARIANTS}
        stats = {v: {m: iv.t_interval(vals) for m, vals in per[v].items()} for v in VARIANTS}
        ae = per["AE"]["knn_accuracy"]
        diffs = {v: iv.paired(ae, per[v]["knn_accuracy"]) for v in VARIANTS if v != "AE"}
        controls = self.controls(params)
        diff = diffs["VAE (beta = 1)"]
        d = iv.fmt(diff)
        if diff["hi"] < 0:
            verdict, why = "does not hold", f"the VAE's codes separate classes better than the AE's (AE - VAE accuracy = {d})."
        elif diff["lo"] > -MARGIN:
            verdict, why = "holds", (f"the AE's codes separate classes at least as well as the VAE's (AE - VAE accuracy = {d}, "
                                     f"no worse than {MARGIN}): the KL term is not what organises them.")
        else:
            verdict, why = "depends", (f"AE - VAE accuracy = {d}: no difference is detected at {len(seeds)} seeds, but one "
                                       f"of more than {MARGIN} either way is not excluded.")
        why += f" Binary pixels score {controls[PIXELS]:.3f}, chance controls {controls['constant']:.3f} and {controls['pixels, shuffled labels']:.3f}."
        numbers = {"models": stats, "ae_minus": diffs, "controls": controls, "k": K}
        bars = [(f"control: {k}", {"mean": a, "lo": float("nan"), "hi": float("nan")}) for k, a in controls.items()]
        bars += [(v, stats[v]["knn_accuracy"]) for v in VARIANTS]
        fig = interval_bars(bars, f"{K}-NN test accuracy of latent means", "Class organisation of the codes")
        rows = ["| representation | k-NN accuracy | test bound (nats) |", "|---|---:|---:|"]
        rows += [f"| control: {k} | {a:.3f} | |" for k, a in controls.items()]
        rows += [f"| {v} | {iv.fmt(stats[v]['knn_accuracy'])} | {iv.fmt(stats[v]['test_bound'], 2)} |" for v in VARIANTS]
        section = (
            "## k-NN accuracy of the latent means\n\n"
            f"{params['dataset']}, MLP {'-'.join(map(str, params['hidden']))}, latent {params['latent_dim']}, "
            f"{params['steps']} steps, Bernoulli decoder on logits. Each test image's mu(x) is classified by the majority "
            f"label of its {K} nearest training mu(x) (Euclidean). Test bound: reconstruction log-likelihood for the AE, "
            "the ELBO for the VAEs.\n\n" + "\n".join(rows) + "\n\nPaired differences (AE minus, same seed): "
            + "; ".join(f"{v}: {iv.fmt(diff)}" for v, diff in diffs.items())
            + ".\n\nEuclidean k-NN is not invariant to how each model scales its units; a VAE's units are scaled by "
            "the prior, an AE's are not. The accuracy is a property of the codes as a decoder's input sees them.\n\n"
            "![k-NN accuracy](knn.png)\n")
        return Report(verdict, why, [section], numbers, {"knn.png": fig})


STUDY = Organisation()
