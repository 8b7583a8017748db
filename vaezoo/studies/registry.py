"""The one registry of studies: name -> (module, one-line summary). A module is imported only when its study
is run, so ``vaezoo study --list`` and ``--help`` load no torch."""

from __future__ import annotations

import importlib

from vaezoo.core.errors import VaezooError

STUDIES: dict[str, tuple[str, str]] = {
    "prior-sampling": ("vaezoo.studies.prior_sampling",
                       "AE vs beta=1 VAE: do prior draws land where the decoder was trained? (MMD to the prior)"),
    "kl-direction": ("vaezoo.studies.kl_direction",
                     "Gaussian fit to a bimodal target: KL(q||p) seeks one mode, KL(p||q) covers both"),
    "samples-per-z": ("vaezoo.studies.samples_per_z",
                      "equal compute B x K: is one z-sample per image enough? (K = 1, 4, 16; K-sample ELBO and IWAE)"),
    "organisation": ("vaezoo.studies.organisation",
                     "k-NN class accuracy of latent means (AE, VAE, beta-VAE): organisation from reconstruction, not KL?"),
    "beta-sweep": ("vaezoo.studies.beta_sweep",
                   "beta from 0 to 64: reconstruction, KL, active units, IS log-likelihood; on shapes, MIG: collapse or disentangle?"),
    "rainforth-snr": ("vaezoo.studies.rainforth_snr",
                      ("IWAE gradient SNR vs K, linear-Gaussian and a trained IWAE: encoder -1/2, decoder +1/2, DReG; "
                       "with ESS / K per x")),
    "dreg-gain": ("vaezoo.studies.dreg_gain",
                  "IWAE trained with reparam vs DReG encoder gradients: test IS log-likelihood over seeds"),
    "interpolation": ("vaezoo.studies.interpolation",
                      "AE vs VAE latent paths: roughness of the decoded path, midpoints off the codes (validated)"),
    "kl-pull": ("vaezoo.studies.kl_pull",
                "per-unit mu and sigma during training: does KL pull mu -> 0, sigma -> 1? (active vs collapsed units)"),
    "burda-table1": ("vaezoo.studies.burda_table1",
                     "Burda et al. 2016 Table 1: VAE and IWAE at k = 1, 5, 50, test NLL and active units (early stopping)"),
    "batch-size": ("vaezoo.studies.batch_size",
                   "B = 1 ... full batch at equal epochs and equal (calibrated) wall time, with B_simple: is 32-256 the sweet spot?"),
}


def study_names() -> list[str]:
    return list(STUDIES)


def get_study(name: str):
    """The ``STUDY`` instance of a registered study; an unknown name is a VaezooError naming the choices."""
    if name not in STUDIES:
        raise VaezooError(f"unknown study '{name}'; choose from {', '.join(STUDIES)}")
    study = importlib.import_module(STUDIES[name][0]).STUDY
    assert study.name == name, f"{STUDIES[name][0]}.STUDY is named '{study.name}', registered as '{name}'"
    return study
