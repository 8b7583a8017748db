"""The kl-pull study: its observer's snapshots come at the right steps and change nothing, and on fixed seeds the
beta = 1 VAE's collapsed units sit at mu ~ 0, sigma ~ 1 while the units it uses sit far below; the beta = 0 control
(no pull) has no unit there."""

from __future__ import annotations

import pytest

from vaezoo.studies.base import Job, JobContext
from vaezoo.studies.runner import run_study


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("kl-pull")
    return out, run_study("kl-pull", "tiny", out, workers=2, track=False)


def final_units(record: dict, beta: str):
    """(seed, active, last test snapshot) of every seed's model at ``beta``."""
    for seed in record["seeds"]:
        r = record["jobs"][f"{beta}/seed{seed}"]
        yield seed, r["active"], r["final"]["test"]


def test_snapshots_at_step_0_and_every_eval_every_step_the_last_being_the_saved_model(tiny):
    _, record = tiny
    p = record["params"]
    for key, r in record["jobs"].items():
        assert r["steps"] == list(range(0, p["steps"] + 1, p["eval_every"])), key
        assert len(r["trajectory"]["mu_sd"]) == len(r["trajectory"]["sigma_mean"]) == len(r["steps"])
        # the last snapshot is of the model the run saved: its spreads classify the units as the reloaded model's do
        assert [sd**2 > 0.01 for sd in r["final"]["test"]["mu_sd"]] == r["active"], key
        assert r["trajectory"]["sigma_mean"][-1] == [round(v, 4) for v in r["final"]["test"]["sigma_mean"]]
        first = r["trajectory"]["sigma_mean"][0]  # the initial encoder: sigma = softplus(~0) ~ 0.69
        assert all(0.4 < s < 0.9 for s in first), key


def test_beta1_collapsed_units_sit_at_the_prior_and_the_most_used_unit_far_below(tiny):
    out, record = tiny
    collapsed = 0
    for seed, active, last in final_units(record, "beta1"):
        for j, a in enumerate(active):
            # whatever the unit does, its aggregate posterior keeps about the prior's mean and variance
            assert abs(last["mu_mean"][j]) < 0.1 and abs(last["mu_sd"][j] ** 2 + last["sigma_sq_mean"][j] - 1) < 0.15
            if not a:
                collapsed += 1
                assert abs(last["sigma_mean"][j] - 1) < 0.05 and last["max_abs_mu"][j] < 0.5, (seed, j)
        assert min(s for s, a in zip(last["sigma_mean"], active) if a) < 0.5, seed  # the reconstruction wins there
    assert collapsed >= 2
    n = record["numbers"]
    assert n["checks"]["beta1_collapsed_at_prior"] and n["checks"]["beta1_most_used_unit_sigma_below_1"]
    assert record["verdict"] == "depends"
    for png in ("trajectories.png", "units.png", "final-sigma.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")


def test_control_without_the_pull_has_no_unit_near_sigma_1_and_high_beta_collapses_all(tiny):
    _, record = tiny
    for seed, active, last in final_units(record, "beta0"):
        assert all(active) and max(last["sigma_mean"]) < 0.1, seed
        assert min(last["mu_sd"]) > 1.5, seed  # nothing holds the codes to the prior's scale
    for seed, active, last in final_units(record, "beta4"):
        assert not any(active) and all(abs(s - 1) < 0.02 for s in last["sigma_mean"]), seed
    assert record["numbers"]["checks"]["control_no_unit_at_prior"]


def test_snapshots_through_train_job_come_at_each_evaluation_and_the_end_and_change_nothing(tmp_path):
    import torch

    from vaezoo.studies.kl_pull import Snapshots, initial_model
    from vaezoo.studies.training import train_job, user_config
    from vaezoo.training import resolve_for_dataset

    params = {"dataset": "digits", "hidden": (16,), "latent_dim": 2, "steps": 250, "eval_every": 100}
    user = user_config(params, 0, {"name": "vae"}, {"beta": 1.0})
    ctx = JobContext(runs_dir=tmp_path)
    watch = Snapshots({"x": torch.rand(20, 64, generator=torch.Generator().manual_seed(0)).round()})
    watch(0, initial_model(resolve_for_dataset(user)), {})  # as the study does, before training
    _, _, watched = train_job(Job("watched", 0, {}), ctx, user, observe=watch)
    _, _, plain = train_job(Job("plain", 0, {}), ctx, user)
    assert watch.steps == [0, 100, 200, 250]
    assert len(watch.stats["x"]) == 4 and len(watch.stats["x"][0]["mu_sd"]) == 2
    assert watched == plain  # watching, and building the initial model, change no number of the run
