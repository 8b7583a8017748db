"""Objectives that cannot go wrong quietly: a learned Gaussian sigma has a floor, so a pixel that never varies cannot
drive the bound to +infinity; STL on the IWAE bound (biased) is refused for training unless allowed, and then the run
says so."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from vaezoo.core.errors import VaezooError
from vaezoo.models.config import SIGMA_FLOOR
from vaezoo.models.distributions import LOG_2PI
from vaezoo.models.likelihoods import GaussianLikelihood


def pixel_cap(floor: float) -> float:
    """The most one pixel's log N(x; m, sigma^2) can be with sigma >= floor: at x = m, -log(floor) - log(2 pi)/2."""
    return -math.log(floor) - 0.5 * LOG_2PI


def fit_sigma_on_a_constant_pixel(floor: float, steps: int = 300) -> list[float]:
    """Adam on a per-pixel log sigma, the decoder's mean already exact on pixel 0 (which never varies); the
    log-density of that pixel after each step."""
    lik = GaussianLikelihood((4,), sigma=1.0, learn_sigma="pixel", sigma_floor=floor)
    opt = torch.optim.Adam(lik.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    x[:, 0] = 0.5
    mean = x.clone()
    mean[:, 1:] = 0.0
    out = []
    for _ in range(steps):
        opt.zero_grad()
        per_pixel = -0.5 * (((x - mean) * torch.exp(-lik.effective_log_sigma())).pow(2) + LOG_2PI + 2 * lik.effective_log_sigma())
        assert torch.allclose(per_pixel.sum(-1), lik.log_prob(x, mean))
        (-lik.log_prob(x, mean).mean()).backward()
        opt.step()
        out.append(float(per_pixel[:, 0].detach().mean()))
    return out


def test_a_constant_pixel_climbs_without_a_floor_and_stops_at_it():
    free = fit_sigma_on_a_constant_pixel(1e-30)
    floored = fit_sigma_on_a_constant_pixel(SIGMA_FLOOR)
    assert free[-1] > pixel_cap(SIGMA_FLOOR) + 10 and free[-1] > free[-50] + 1  # still climbing, past any cap
    assert max(floored) <= pixel_cap(SIGMA_FLOOR) + 1e-5 and floored[-1] == pytest.approx(pixel_cap(SIGMA_FLOOR), abs=1e-4)


def test_the_floor_holds_the_density_and_gives_no_gradient_below_it():
    lik = GaussianLikelihood((3,), sigma=1.0, learn_sigma="pixel")
    with torch.no_grad():
        lik.log_sigma.copy_(torch.tensor([-50.0, 0.0, -1.0]))
    x = torch.zeros(2, 3)
    lp = lik.log_prob(x, x)
    assert torch.isfinite(lp).all() and float(lp[0]) <= 3 * pixel_cap(SIGMA_FLOOR)
    lp.sum().backward()
    assert lik.log_sigma.grad[0] == 0 and lik.log_sigma.grad[1] != 0
    fixed = GaussianLikelihood((3,), sigma=1e-3)  # an explicit fixed sigma is the user's choice: no floor
    assert float(fixed.effective_log_sigma()) == pytest.approx(math.log(1e-3))


@pytest.mark.parametrize("kwargs", [{"sigma_floor": 0.0}, {"sigma_floor": float("nan")}, {"sigma_floor": 2.0}])
def test_a_floor_that_is_no_floor_is_refused(kwargs):
    with pytest.raises(VaezooError, match="sigma_floor must be > 0"):
        GaussianLikelihood((3,), sigma=1.0, learn_sigma="global", **kwargs)


def test_training_a_per_pixel_sigma_on_digits_keeps_the_bound_finite_and_capped(tmp_path):
    """digits has 3 pixels that never vary; 300 steps at lr 3e-2 take its sigma there to the floor."""
    from vaezoo.training.config import resolve_config
    from vaezoo.training.loop import train

    user = {"model": {"hidden": [32], "latent_dim": 4, "likelihood": "gaussian", "learn_sigma": "pixel"},
            "data": {"name": "digits"}, "batch_size": 64, "steps": 300, "eval_every": 300, "checkpoint_every": 300,
            "eval_k": 4, "optim": {"lr": 3e-2, "fused": False}}
    final = train(resolve_config(user, (1, 8, 8)), tmp_path / "r", track=False, progress=False)
    assert math.isfinite(final["test_elbo"]) and final["test_elbo"] <= 64 * pixel_cap(SIGMA_FLOOR)
    from vaezoo.training.rundir import load_checkpoint

    log_sigma = load_checkpoint(tmp_path / "r" / "checkpoint.pt")["model"]["likelihood.log_sigma"].flatten()
    assert float(log_sigma[[0, 32, 39]].max()) < math.log(SIGMA_FLOOR) + 0.5  # the constant pixels went to the floor


def _train(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "vaezoo.cli", "train", "--dataset", "digits", "--model", "iwae",
                           "--estimator", "stl", "--set", "model.hidden=[16]", "--latent-dim", "2", "--steps", "2",
                           "--batch-size", "16", "--eval-every", "2", "--checkpoint-every", "2", "-k", "2", *args,
                           "--run-dir", str(tmp_path / "run"), "--no-track", "--no-progress"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)


def test_stl_on_iwae_is_refused_for_training_unless_allowed_and_then_the_run_says_so(tmp_path):
    refused = _train(tmp_path)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert refused.stderr.startswith("error: STL on the IWAE bound is a biased") and "--allow-stl-iwae" in refused.stderr
    assert not (tmp_path / "run").exists()
    allowed = _train(tmp_path, "--allow-stl-iwae")
    assert allowed.returncode == 0, allowed.stderr
    assert "warning: STL on the IWAE bound is a biased" in allowed.stderr
    tags = json.loads((tmp_path / "run" / "run.json").read_text())["tags"]
    assert "biased" in tags["vaezoo.warning.stl_iwae"]


def test_the_gradient_study_may_still_build_the_pair():
    """Measuring STL's bias on IWAE is legitimate: the objective itself accepts the pair; only training refuses."""
    from vaezoo.objectives import ObjectiveConfig
    from vaezoo.training.config import resolve_config

    ObjectiveConfig(bound="iwae", estimator="stl", k=4)
    with pytest.raises(VaezooError, match="biased"):
        resolve_config({"model": {"name": "iwae"}, "objective": {"estimator": "stl"}}, (1, 8, 8))
    cfg = resolve_config({"model": {"name": "iwae"}, "objective": {"estimator": "stl"}, "allow_stl_iwae": True}, (1, 8, 8))
    assert set(cfg.warnings()) == {"vaezoo.warning.stl_iwae"}
