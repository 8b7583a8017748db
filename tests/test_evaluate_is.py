"""The importance-sampled log-likelihood's interval: it covers the estimate's seed-to-seed spread (where the old
delta-method s.e. does not), the exact log p(x) of the linear-Gaussian model lies in it plus the reported bias
trend, and its diagnostics (ESS, LL at S/10, S/2, S) are what their definitions say."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from scipy.stats import binom, chi2

from vaezoo.core.errors import VaezooError
from vaezoo.models import build_model
from vaezoo.models.vae import MIN_SCALE
from vaezoo.training.evaluate import importance_sampled_loglik, sample_blocks


def seed_reports(model, x, samples: int, seeds: int) -> list[dict]:
    return [importance_sampled_loglik(model, x, samples, generator=torch.Generator().manual_seed(s)) for s in range(seeds)]


def spread_ratio(reports: list[dict], se_key: str) -> float:
    """Observed s.d. of ll_is over seeds / the rms of the s.e. each seed reported (1 when the s.e. is right)."""
    sd = statistics.stdev(r["ll_is"] for r in reports)
    return sd / math.sqrt(statistics.mean(r[se_key] ** 2 for r in reports))


def spread_limit(n: int, p: float = 0.99) -> float:
    """Largest ratio an s.e. that is right (or too large) gives with probability p from n seeds: the sample s.d.
    has (n - 1) s^2 / sigma^2 ~ chi2(n - 1) for normal estimates."""
    return math.sqrt(chi2.ppf(p, n - 1) / (n - 1))


def assert_interval_covers(reports: list[dict]) -> None:
    """The spread check above, and the interval's coverage of the seeds' mean (a stand-in for E[ll_is]) at its
    stated level, allowing the binomial error of n seeds (1% one-sided)."""
    n = len(reports)
    assert spread_ratio(reports, "ll_is_mc_se") <= spread_limit(n)
    centre = statistics.mean(r["ll_is"] for r in reports)
    covered = sum(r["ll_is_ci_low"] <= centre <= r["ll_is_ci_high"] for r in reports)
    assert covered >= binom.ppf(0.01, n, reports[0]["ll_is_ci_level"])


def narrow_posterior_model(truth, factor: float):
    """The linear-Gaussian model with q = the true posterior's mean but ``factor`` x its s.d.: for factor < 1/sqrt(2)
    the weights have infinite variance, the hard case for any interval."""
    torch.manual_seed(0)
    model = build_model(truth.model_config())
    truth.set_model(model)
    _, std = truth.posterior(torch.zeros(1, truth.D))
    with torch.no_grad():
        model.encoder[-1].bias[truth.d :].copy_(torch.log(torch.expm1(factor * std - MIN_SCALE)))
    return model.eval()


@pytest.fixture(scope="module")
def trained_digits(tmp_path_factory):
    from vaezoo.data.datasets import eval_binarized, load_dataset
    from vaezoo.training import load_run_model
    from vaezoo.training.config import resolve_config
    from vaezoo.training.loop import train

    user = {"model": {"hidden": [64, 32], "latent_dim": 8}, "data": {"name": "digits"}, "batch_size": 32,
            "optim": {"fused": False},  # fused Adam stalls on a loaded 2-core machine
            "steps": 200, "eval_every": 200, "checkpoint_every": 200, "eval_k": 8}
    run = tmp_path_factory.mktemp("is") / "run"
    train(resolve_config(user, (1, 8, 8)), run, track=False, progress=False)
    model, cfg = load_run_model(run)
    return model.eval(), eval_binarized(load_dataset(cfg.data).test, cfg.data.binarize)[:100]


def test_interval_covers_the_seed_to_seed_spread_on_a_trained_model(trained_digits):
    model, x = trained_digits
    reports = seed_reports(model, x, 500, 16)
    assert_interval_covers(reports)
    for r in reports:  # Jensen, draw by draw: a log-mean over more of the same draws is never below the parts' mean
        assert r["ll_is_s10"] <= r["ll_is_s2"] <= r["ll_is"]
        assert r["ll_is_groups"] == 10 and len(r["ll_is_group_means"]) == 10 and r["ll_is_ci_level"] == 0.95


def test_heavy_tailed_weights_the_interval_covers_and_the_plugin_se_does_not(truth):
    """q at 0.3x the posterior s.d.: the delta-method s.e. (the old ll_is_mc_se) is ~1.5x too small, the
    replicate-group interval is not; the check has the power to tell them apart."""
    model = narrow_posterior_model(truth, 0.3)
    x = truth.sample(100, torch.Generator().manual_seed(1))
    reports = seed_reports(model, x, 1000, 32)
    assert_interval_covers(reports)
    assert spread_ratio(reports, "ll_is_plugin_se") > spread_limit(len(reports))
    assert all(r["ll_is_ess_below"] > 0.1 for r in reports)  # and the ESS says the estimate rests on few draws


def test_exact_log_px_lies_in_the_interval_plus_the_bias_trend(truth):
    """Weights with infinite variance (q at 0.6x the posterior s.d.), S = 1000: every seed's
    [ci_low, ci_high + (ll_is - ll_is_s10)] holds the exact mean log p(x)."""
    model = narrow_posterior_model(truth, 0.6)
    x = truth.sample(100, torch.Generator().manual_seed(1))
    exact = float(truth.log_marginal(x).double().mean())
    for r in seed_reports(model, x, 1000, 16):
        assert r["ll_is_ci_low"] <= exact <= r["ll_is_ci_high"] + (r["ll_is"] - r["ll_is_s10"])
        assert r["ll_is"] < exact  # and the estimate itself sits below: a stochastic lower bound


def test_exact_posterior_gives_full_ess_and_the_exact_value(truth):
    """With q = p(z|x) every weight equals p(x): ESS = S for every point and every estimate is log p(x)."""
    model = narrow_posterior_model(truth, 1.0)
    x = truth.sample(20, torch.Generator().manual_seed(2))
    r = importance_sampled_loglik(model, x, 200, generator=torch.Generator().manual_seed(0))
    exact = float(truth.log_marginal(x).double().mean())
    assert r["ll_is_ess_min"] == pytest.approx(200, rel=1e-3) and r["ll_is_ess_below"] == 0
    for key in ("ll_is", "ll_is_s10", "ll_is_s2"):
        assert r[key] == pytest.approx(exact, abs=1e-3)
    assert r["ll_is_mc_se"] < 1e-4


def test_blocks_make_groups_tenths_and_halves_from_whole_blocks():
    assert sample_blocks(1000, 10) == [i * 100 for i in range(11)]
    cuts = sample_blocks(1001, 4)
    assert cuts[0] == 0 and cuts[-1] == 1001 and cuts == sorted(set(cuts))
    for parts in (4, 10, 2):
        assert {round(i * 1001 / parts) for i in range(parts + 1)} <= set(cuts)


@pytest.mark.parametrize("samples,groups", [(5, 10), (100, 1), (9, 2)])
def test_too_few_samples_or_groups_is_refused(truth, samples, groups):
    model = narrow_posterior_model(truth, 1.0)
    with pytest.raises(VaezooError, match="needs >= 2 groups"):
        importance_sampled_loglik(model, truth.sample(4, torch.Generator().manual_seed(0)), samples, groups=groups)


def test_eval_refuses_too_few_is_samples_in_one_line_before_any_work(tmp_path):
    """Through the real command: checked before the run folder is even read."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "vaezoo.cli", "eval", str(tmp_path / "no-run"), "--is-samples", "5",
                           "--no-track"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --is-samples must be 0 (skip) or >= 10")
    assert len(proc.stderr.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []
