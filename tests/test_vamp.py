"""The VampPrior variant: its prior is the mixture it claims, it trains with the sampled KL only, and its exported
decoder samples from that mixture in the numpy runtime."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributions as D
from torch import nn

from exporters.export import ExportOptions, export_model
from vaezoo.core.errors import VaezooError
from vaezoo.models import get_model, list_models
from vaezoo.models import vamp as vamp_module
from vaezoo.models.distributions import standard_normal_log_prob
from vaezoo.objectives import Objective, ObjectiveConfig
from vaezoo.runtime import Decoder, sample_mixture

SMALL = {"hidden": [16], "input_shape": [1, 8, 8]}


def _vamp(latent_dim: int = 3, pseudo_inputs: int = 6, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return get_model("vamp", latent_dim=latent_dim, pseudo_inputs=pseudo_inputs, **{**SMALL, **kw}).eval()


def _direct_log_prior(model, z: torch.Tensor) -> torch.Tensor:
    """log (1/C) sum_c q(z | u_c), one component at a time with torch.distributions, in float64."""
    with torch.no_grad():
        comp = model.encode(model.pseudo_inputs)
    dens = [D.Independent(D.Normal(mu.double(), s.double()), 1).log_prob(z.double()).exp()
            for mu, s in zip(comp.mu, comp.sigma)]
    return torch.stack(dens).mean(0).log()


def test_vamp_is_registered_once_with_the_sampled_kl():
    spec = {s.name: s for s in list_models()}["vamp"]
    assert spec.cls is vamp_module.VampVAE and spec.objective_defaults == {"kl": "mc"}
    model = _vamp(pseudo_inputs=9)
    assert model.pseudo_inputs.shape == (9, 1, 8, 8) and not model.standard_prior
    assert any(p is model.pseudo_inputs for p in model.parameters())  # learned with the rest


@pytest.mark.parametrize("chunk", [vamp_module.PRIOR_CHUNK_ELEMENTS, 7])  # one pass, and one row per chunk
def test_log_prior_is_the_mixture_density(monkeypatch, chunk):
    monkeypatch.setattr(vamp_module, "PRIOR_CHUNK_ELEMENTS", chunk)
    model = _vamp()
    z = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(1)) * 2  # any leading shape [..., d]
    with torch.no_grad():
        got = model.log_prior(z)
    assert got.shape == (4, 5)
    torch.testing.assert_close(got.double(), _direct_log_prior(model, z), rtol=0, atol=1e-5)


@pytest.mark.parametrize("d", [1, 2])
def test_prior_density_integrates_to_one(d):
    model = _vamp(latent_dim=d, pseudo_inputs=4)
    with torch.no_grad():
        comp = model.encode(model.pseudo_inputs)
        lo = float((comp.mu - 9 * comp.sigma).min())
        hi = float((comp.mu + 9 * comp.sigma).max())
        n = 4001 if d == 1 else 801
        axis = torch.linspace(lo, hi, n, dtype=torch.float64)
        grid = torch.stack(torch.meshgrid(*[axis] * d, indexing="ij"), -1)  # [n, (n,) d]
        dens = model.log_prior(grid.float()).double().exp()
    total = dens
    for _ in range(d):  # trapezoid rule, one axis at a time
        total = torch.trapezoid(total, axis, dim=0)
    # the grid spans +-9 sigma of every component and resolves the narrowest one with > 10 points per sigma
    assert float(comp.sigma.min()) * (n - 1) / (hi - lo) > 10
    assert abs(float(total) - 1) < 1e-3, float(total)


def test_one_pseudo_input_with_a_standard_normal_posterior_is_the_standard_prior():
    model = _vamp(latent_dim=4, pseudo_inputs=1)
    last = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():  # q(z | u) = N(0, I) for any u: mu = 0, softplus(raw) + 1e-4 = 1
        last.weight.zero_()
        last.bias[:4] = 0
        last.bias[4:] = math.log(math.expm1(1 - 1e-4))
        z = torch.randn(3, 50, 4, generator=torch.Generator().manual_seed(2)) * 3
        torch.testing.assert_close(model.log_prior(z), standard_normal_log_prob(z), rtol=0, atol=1e-5)


def _mixture_moments(means: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of (1/C) sum_c N(means[c], diag scales[c]^2), exactly."""
    m = means.mean(0)
    second = np.mean([np.diag(s**2) + np.outer(mu, mu) for mu, s in zip(means, scales)], axis=0)
    return m, second - np.outer(m, m)


def _assert_moments(z: np.ndarray, means: np.ndarray, scales: np.ndarray) -> None:
    """Sample mean and covariance within 5 standard errors (each estimated from the draws) of the mixture's:
    a Gaussian-approximation false-failure chance under 1e-6 per entry, and the seed is fixed."""
    z = z.astype(np.float64)
    n = len(z)
    mean, cov = _mixture_moments(means.astype(np.float64), scales.astype(np.float64))
    se_mean = z.std(0, ddof=1) / math.sqrt(n)
    assert (np.abs(z.mean(0) - mean) < 5 * se_mean).all(), (z.mean(0), mean, se_mean)
    c = z - z.mean(0)
    prods = c[:, :, None] * c[:, None, :]  # [n, d, d]: the covariance is their mean
    se_cov = prods.std(0, ddof=1) / math.sqrt(n)
    assert (np.abs(prods.mean(0) - cov) < 5 * se_cov).all(), (prods.mean(0), cov, se_cov)
    # and the test can fail: the moments of N(0, I) are far outside those bounds
    assert (np.abs(np.cov(z.T) - np.eye(z.shape[1])) > 5 * se_cov).any()


def test_runtime_mixture_draws_have_the_mixture_mean_and_covariance():
    means = np.array([[-2.0, 0.5], [1.0, 1.5], [3.0, -1.0]], dtype=np.float32)
    scales = np.array([[0.3, 1.0], [0.5, 0.2], [1.2, 0.7]], dtype=np.float32)
    z = sample_mixture(means, scales, 200_000, np.random.default_rng(0))
    assert z.dtype == np.float32 and z.shape == (200_000, 2)
    _assert_moments(z, means, scales)
    again = sample_mixture(means, scales, 200_000, np.random.default_rng(0))
    assert np.array_equal(z, again)  # seeded


def test_model_samples_draw_z_from_the_mixture(monkeypatch):
    model = _vamp(latent_dim=2, pseudo_inputs=3)
    monkeypatch.setattr(model, "decode", lambda z: z)  # read z itself off the images
    monkeypatch.setattr(model.likelihood, "mean", lambda params: params)
    z = model.sample(100_000, torch.Generator().manual_seed(0))
    assert torch.equal(z, model.sample(100_000, torch.Generator().manual_seed(0)))  # seeded
    with torch.no_grad():
        comp = model.encode(model.pseudo_inputs)
    _assert_moments(z.numpy(), comp.mu.numpy(), comp.sigma.numpy())


def test_bounds_are_ordered_elbo_below_iwae_on_the_same_model():
    model = _vamp(latent_dim=3, pseudo_inputs=5)
    x = torch.bernoulli(torch.full((64, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        elbo = Objective(ObjectiveConfig(bound="elbo", kl="mc", k=1000))(model, x, g)
        iwae = Objective(ObjectiveConfig(bound="iwae", k=1000))(model, x, g)
        kl_std = model.encode(x).kl_standard_normal().mean()
    # L_1 <= L_K (Burda et al. 2016), each from its own 1000 draws per datapoint: the batch-mean gap is ~0.18 nats
    # on this untrained model, the Monte Carlo s.e. of the batch-mean ELBO ~0.005 (of IWAE_1000 smaller)
    assert float(iwae.bound - elbo.bound) > 0.1
    # the logged KL is the sampled KL to the mixture, not the closed form to N(0, I)
    assert abs(float(elbo.terms["kl"]) - float(kl_std)) > 0.1


@pytest.mark.parametrize("cfg", [{"kl": "analytic"}, {"kl": "analytic", "free_bits": 0.5}, {"kl": "auto"}])
def test_closed_form_kl_is_refused_for_the_vamp_prior(cfg):
    objective = Objective(ObjectiveConfig(**cfg))
    with pytest.raises(VaezooError, match="closed-form KL to N\\(0, I\\); model 'vamp' has another prior"):
        objective.check_model(_vamp())
    Objective(ObjectiveConfig(kl="mc")).check_model(_vamp())  # the sampled KL is fine
    objective.check_model(get_model("vae", **SMALL))  # and the closed form with N(0, I)


def test_export_stores_the_mixture_and_the_runtime_samples_from_it(tmp_path):
    model = _vamp(latent_dim=2, pseudo_inputs=4)
    export_model(model, tmp_path / "vamp.onnx")
    dec = Decoder(tmp_path / "vamp.onnx", providers=["CPUExecutionProvider"])
    with torch.no_grad():
        comp = model.encode(model.pseudo_inputs)
    means, scales = dec.prior
    assert np.array_equal(means, comp.mu.numpy()) and np.array_equal(scales, comp.sigma.numpy())
    assert dec.metadata["prior"]["kind"] == "mixture" and dec.metadata["model"] == "vamp"
    x = dec.sample(500, seed=3)
    z = sample_mixture(means, scales, 500, np.random.default_rng(3))
    assert np.array_equal(x, dec.decode(z))  # the same draws as sample_mixture, decoded by the unchanged graph
    with torch.no_grad():
        assert np.abs(x - torch.sigmoid(model.decode(torch.from_numpy(z))).numpy()).max() <= 1e-5
    # a plain VAE's decoder still draws N(0, I), exactly as before
    export_model(get_model("vae", latent_dim=2, **SMALL), tmp_path / "vae.onnx")
    plain = Decoder(tmp_path / "vae.onnx", providers=["CPUExecutionProvider"])
    assert plain.prior is None
    z0 = np.random.default_rng(3).standard_normal((5, 2), dtype=np.float32)
    assert np.array_equal(plain.sample(5, seed=3), plain.decode(z0))


def test_sampler_graph_export_is_refused_for_the_mixture_and_writes_nothing(tmp_path):
    with pytest.raises(VaezooError, match="sampler graph draws z from N\\(0, I\\).*mixture prior"):
        export_model(_vamp(), tmp_path / "s.onnx", ExportOptions(sampler=True))
    assert list(tmp_path.iterdir()) == []


def _train(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vaezoo.cli", "train", "--model", "vamp", "--dataset", "digits",
                           "--steps", "2", *args, "--run-dir", str(tmp_path / "run"), "--no-track", "--no-progress"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=180)


@pytest.mark.parametrize("args,message", [
    (["--set", "model.pseudo_inputs=0"], "pseudo_inputs (the VampPrior's mixture components) must be >= 1, got 0"),
    (["--set", "model.pseudo_inputs=-3"], "must be >= 1, got -3"),
    (["--kl", "analytic"], "model 'vamp' has another prior, whose KL has no closed form: use kl=mc"),
])
def test_bad_vamp_input_through_the_real_command_is_one_line_and_writes_nothing(tmp_path, args, message):
    proc = _train(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # make test's time; the fast suite keeps a sibling of this contract
def test_vamp_trains_through_the_real_command_and_is_listed(tmp_path):
    models = subprocess.run([sys.executable, "-m", "vaezoo.cli", "models"], capture_output=True, text=True, timeout=120)
    assert models.returncode == 0 and "vamp" in models.stdout and "VampPrior" in models.stdout
    proc = _train(tmp_path, "--set", "model.hidden=[16]", "--set", "model.latent_dim=2", "--set",
                  "model.pseudo_inputs=5", "--batch-size", "16", "--set", "eval_every=2", "--set", "eval_k=4")
    assert proc.returncode == 0, proc.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["model"]["pseudo_inputs"] == 5 and config["objective"]["kl"] == "mc"
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert math.isfinite(final["test_elbo"]) and final["test_elbo"] <= final["test_iwae_k4"] + 0.5
    # the run's export: the sampler graph refused in one line, nothing written; the decoder graph carries the mixture
    export = [sys.executable, "-m", "vaezoo.cli", "export", str(tmp_path / "run"), "--out"]
    refused = subprocess.run([*export, str(tmp_path / "s.onnx"), "--sampler"], capture_output=True, text=True, timeout=180)
    assert refused.returncode == 2 and refused.stderr.startswith("error: the sampler graph draws z from N(0, I)")
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "s.onnx").exists()
    done = subprocess.run([*export, str(tmp_path / "d.onnx")], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    dec = Decoder(tmp_path / "d.onnx", providers=["CPUExecutionProvider"])
    assert dec.prior[0].shape == (5, 2) and dec.metadata["model_config"]["pseudo_inputs"] == 5
    assert dec.sample(3, seed=0).shape == (3, 1, 8, 8)


def test_gradient_variance_study_measures_the_vamp_prior_with_the_sampled_kl():
    from vaezoo.gradnoise.measure import GradVarConfig, _Engines

    for model, kl in ((_vamp(), "mc"), (get_model("vae", **SMALL), "analytic")):  # 'auto' as each model trains
        engine = _Engines(model, None, GradVarConfig(), "cpu")("elbo", "reparam", 1)
        assert engine.cfg.kl == kl


def test_dreg_agrees_with_the_pathwise_gradient_under_the_vamp_prior():
    """The encoder enters log w through the prior too (q at the pseudo-inputs), not only through z: DReG must weight
    that part, and the pseudo-inputs', by w~ as it does the decoder's. Unbiased: its mean gradient matches reparam's."""
    from helpers import grad_draws

    model = _vamp(latent_dim=2, pseudo_inputs=3, seed=1)
    x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(2))
    ref = grad_draws(model, Objective(ObjectiveConfig(bound="iwae", k=3)), x, 2000, seed=5)
    dreg = grad_draws(model, Objective(ObjectiveConfig(bound="iwae", k=3, estimator="dreg")), x, 1000, seed=6)
    se = torch.sqrt(ref.var(0) / len(ref) + dreg.var(0) / len(dreg))
    z = (ref.mean(0) - dreg.mean(0)) / se.clamp_min(1e-12)
    # 2436 parameters: the largest of that many |N(0, 1)| passes 4.5 with chance ~2%; without the prior's top-up the
    # largest |z| is 28 (575 parameters beyond 4)
    assert z.abs().max() < 4.5, f"max |z| {z.abs().max():.2f}"


def test_sample_metrics_draw_from_the_vamp_prior():
    from vaezoo.sample_quality.report import prior_samples

    model = _vamp(latent_dim=2, pseudo_inputs=3)
    got = prior_samples(model, 50, torch.Generator().manual_seed(0))
    assert torch.equal(got, model.sample(50, torch.Generator().manual_seed(0)))
    with torch.no_grad():  # not the N(0, I) images of the same seed
        standard = model.likelihood.mean(model.decode(torch.randn(50, 2, generator=torch.Generator().manual_seed(0))))
    assert not torch.allclose(got, standard, atol=1e-3)
