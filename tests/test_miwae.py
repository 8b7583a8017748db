"""MIWAE (Rainforth et al. 2018): M outer x K inner samples. Its bound sits between the ELBO and IWAE of the same
M K draws and reduces to each at the ends; DReG's gradient of it agrees with the pathwise one; it is a registered
variant that trains."""

from __future__ import annotations

import pytest
import torch
from helpers import grad_draws

from vaezoo.models import build_model, list_models
from vaezoo.objectives import Objective, ObjectiveConfig
from vaezoo.objectives.bounds import elbo, iwae, miwae


def test_miwae_is_iwae_at_m1_the_elbo_at_k1_and_between_them_otherwise():
    log_w = torch.randn(12, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    assert torch.equal(miwae(log_w, outer=1), iwae(log_w))
    assert torch.allclose(miwae(log_w, outer=12), elbo(log_w))
    for m in (2, 3, 4, 6):  # Jensen within and across the groups: exact for the same draws
        assert (elbo(log_w) <= miwae(log_w, outer=m) + 1e-12).all() and (miwae(log_w, outer=m) <= iwae(log_w) + 1e-12).all()
    assert torch.allclose(miwae(log_w, outer=3), torch.stack([iwae(g) for g in log_w.reshape(3, 4, 5)]).mean(0))


def test_objective_draws_m_times_k_and_refuses_m_outside_miwae():
    out = Objective(ObjectiveConfig(bound="miwae", k=3, m=2))
    assert out.bound(torch.zeros(6, 2)).shape == (2,)
    with pytest.raises(Exception, match="defined for the miwae bound only"):
        ObjectiveConfig(bound="iwae", k=4, m=2)
    with pytest.raises(Exception, match="does not apply to bound 'miwae'"):
        ObjectiveConfig(bound="miwae", k=4, m=2, estimator="stl")


def test_dreg_on_miwae_agrees_with_reparam(truth):
    torch.manual_seed(0)
    model = build_model(truth.model_config())
    truth.set_model(model, posterior=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = truth.sample(8, torch.Generator().manual_seed(1))
    ref = grad_draws(model, Objective(ObjectiveConfig(bound="miwae", k=3, m=2)), x, 2000, seed=5)
    dreg = grad_draws(model, Objective(ObjectiveConfig(bound="miwae", k=3, m=2, estimator="dreg")), x, 1000, seed=6)
    se = torch.sqrt(ref.var(0) / len(ref) + dreg.var(0) / len(dreg))
    z = (ref.mean(0) - dreg.mean(0)) / se.clamp_min(1e-12)
    assert z.abs().max() < 4.0, f"max |z| {z.abs().max():.2f}"
    # and the check can tell MIWAE(2, 3) from IWAE over the same 6 draws: another objective, another gradient
    other = grad_draws(model, Objective(ObjectiveConfig(bound="iwae", k=6)), x, 2000, seed=7)
    se = torch.sqrt(ref.var(0) / len(ref) + other.var(0) / len(other))
    assert ((ref.mean(0) - other.mean(0)) / se.clamp_min(1e-12)).abs().max() > 6


def test_miwae_is_a_registered_variant_that_trains_with_reparam_and_dreg(tmp_path):
    from vaezoo.training.config import resolve_config
    from vaezoo.training.loop import train

    assert "miwae" in {s.name for s in list_models()}
    for estimator in ("reparam", "dreg"):
        cfg = resolve_config({"model": {"name": "miwae", "hidden": [16], "latent_dim": 2}, "data": {"name": "digits"},
                              "objective": {"estimator": estimator}, "batch_size": 16, "steps": 3, "eval_every": 3,
                              "checkpoint_every": 3, "eval_k": 4, "optim": {"fused": False}}, (1, 8, 8))
        assert (cfg.objective.bound, cfg.objective.k, cfg.objective.m, cfg.objective.kl) == ("miwae", 8, 8, "mc")
        final = train(cfg, tmp_path / estimator, track=False, progress=False)
        assert final["test_elbo"] <= final["test_iwae_k4"] + 0.5 and torch.isfinite(torch.tensor(final["test_elbo"]))
