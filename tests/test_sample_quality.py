"""The sample-quality metric (vaezoo.sample_quality): its measures against known answers, the shipped
classifiers against their manifest, the interval's coverage, the claims it must separate (a trained VAE
against noise and against a collapsed one) and the command's bad input."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys

import pytest
import torch

from vaezoo.core.errors import VaezooError
from vaezoo.data import DataConfig, load_dataset
from vaezoo.sample_quality import classifier as clf
from vaezoo.sample_quality import frechet_distance, precision_recall, sample_quality
from vaezoo.sample_quality.report import _features, _interval, _scores, prior_samples


def test_frechet_distance_matches_the_closed_form_between_gaussians():
    """N(0, I) vs N(m, s^2 I) in d dimensions: |m|^2 + d (1 - s)^2; the same set against itself: 0."""
    g = torch.Generator().manual_seed(0)
    d, n = 8, 200_000
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    m, s = torch.full((d,), 0.5, dtype=torch.float64), 2.0
    b = m + s * torch.randn(n, d, generator=g, dtype=torch.float64)
    exact = float(m.square().sum()) + d * (1 - s) ** 2
    assert frechet_distance(a, b) == pytest.approx(exact, rel=0.02)
    assert abs(frechet_distance(a[:1000], a[:1000])) < 1e-8
    with pytest.raises(VaezooError, match="same d"):
        frechet_distance(a[:, :2], b)


def test_precision_and_recall_see_overlap_and_missing_modes():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(500, 4, generator=g)
    same = torch.randn(500, 4, generator=g)
    far = torch.randn(500, 4, generator=g) + 50
    half = torch.cat([same[:250], far[:250]])  # half the samples off the data
    p, r = precision_recall(real, same)
    assert p > 0.8 and r > 0.8
    assert precision_recall(real, far) == (0.0, 0.0)
    p_half, _ = precision_recall(real, half)
    assert 0.35 < p_half < 0.55
    one_mode = torch.randn(500, 4, generator=g) * 0.05  # all samples in one small corner: precise, no recall
    p1, r1 = precision_recall(real, one_mode)
    assert p1 > 0.9 and r1 < 0.2


@pytest.mark.parametrize("name", sorted(clf.RECIPES))
def test_a_shipped_classifier_is_what_its_manifest_says(name):
    """Hash, size, parameter count, input shape and test accuracy recomputed from the shipped file."""
    entry = {e.name: e for e in clf.read_manifest()}[name]
    data = (clf.HERE / entry.file).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry.sha256 and len(data) == entry.size_bytes
    net, loaded = clf.load_classifier(entry.datasets[0])
    assert loaded == entry
    assert sum(p.numel() for p in net.parameters()) == entry.parameter_count
    ds = load_dataset(DataConfig(name=entry.recipe.dataset, binarize="none"))
    assert tuple(ds.shape) == tuple(entry.input_shape)
    assert clf.accuracy(net, ds.test, ds.test_labels) == pytest.approx(entry.test_accuracy, abs=1e-4)
    assert entry.test_accuracy > 0.95


def test_a_tampered_classifier_is_refused(tmp_path, monkeypatch):
    entry = clf.entry_for("digits")
    (tmp_path / clf.CLASSIFIER_MANIFEST.name).write_bytes(clf.CLASSIFIER_MANIFEST.read_bytes())
    data = bytearray((clf.HERE / entry.file).read_bytes())
    data[-10] ^= 1
    (tmp_path / entry.file).write_bytes(bytes(data))
    monkeypatch.setattr(clf, "HERE", tmp_path)
    with pytest.raises(VaezooError, match="sha256"):
        clf.load_classifier("digits")


def test_a_dataset_without_a_classifier_is_named():
    with pytest.raises(VaezooError, match="no shipped classifier for dataset 'linear-gaussian'"):
        clf.entry_for("linear-gaussian")


def _train(tmp_path, name, *extra):
    run = tmp_path / name
    cmd = [sys.executable, "-m", "vaezoo", "train", "--dataset", "digits", "--steps", "300", "--set", "model.hidden=[64]",
           "--set", "model.latent_dim=8", "--no-track", "--no-progress", "--run-dir", str(run), *extra]
    subprocess.run(cmd, check=True, capture_output=True)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sq")
    return {"vae": _train(tmp, "vae"), "collapsed": _train(tmp, "collapsed", "--beta", "64")}


def test_a_trained_vae_beats_noise_and_a_collapsed_vae_and_trails_real_images(runs):
    """The claims the metric must separate, each with its interval: held-out real images < a trained VAE < a
    collapsed (beta = 64) VAE and < uniform noise, in Fréchet distance; the collapsed model has no recall in any set."""
    from vaezoo.training import load_run_model

    ds = load_dataset(DataConfig(name="digits", binarize="none"))
    sq = {name: sample_quality(load_run_model(run)[0], ds) for name, run in runs.items()}
    vae, collapsed = sq["vae"], sq["collapsed"]
    held, noise = vae["controls"]["held_out_images"]["frechet"], vae["controls"]["uniform_noise"]["frechet"]
    assert held < vae["frechet"]["lo"]
    assert vae["frechet"]["hi"] < noise and vae["frechet"]["hi"] < collapsed["frechet"]["lo"]
    assert max(collapsed["recall"]["per_set"]) == 0.0  # one mean image: no real image's mode is covered


def test_the_sample_interval_covers_the_expected_distance(runs):
    """24 groups of 5 sample sets: the 95% t-interval of each group must hold the mean over all 120 sets (the
    expected Fréchet distance at this n) in >= 95% less 3 binomial s.e. of them (0.82)."""
    from vaezoo.training import load_run_model

    model = load_run_model(runs["vae"])[0].eval()
    ds = load_dataset(DataConfig(name="digits", binarize="none"))
    net, _ = clf.load_classifier("digits")
    real_f = _features(net, ds.test)
    per_set = []
    for s in range(120):
        x = prior_samples(model, len(ds.test), torch.Generator().manual_seed(10_000 + s))
        per_set.append(frechet_distance(real_f, _features(net, x)))
    truth = sum(per_set) / len(per_set)
    groups = [_interval(per_set[i : i + 5], 0.95) for i in range(0, 120, 5)]
    coverage = sum(gr["lo"] <= truth <= gr["hi"] for gr in groups) / len(groups)
    assert coverage >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / len(groups)), coverage


def test_eval_samples_on_a_dataset_without_a_classifier_is_one_error_line(tmp_path):
    run = tmp_path / "lg"
    subprocess.run([sys.executable, "-m", "vaezoo", "train", "--dataset", "linear-gaussian", "--binarize", "none",
                    "--likelihood", "gaussian", "--steps", "2",
                    "--no-track", "--no-progress", "--run-dir", str(run)], check=True, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "vaezoo", "eval", str(run), "--samples", "--no-track"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: no shipped classifier for dataset 'linear-gaussian'")
    assert not (run / "eval.json").exists()


def test_eval_samples_prints_the_metric_beside_its_controls(runs):
    r = subprocess.run([sys.executable, "-m", "vaezoo", "eval", str(runs["vae"]), "--samples", "--is-samples", "0",
                        "--no-track"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "not comparable to Inception FID" in r.stdout and "held-out real" in r.stdout and "uniform noise" in r.stdout
    import json

    saved = json.loads((runs["vae"] / "eval.json").read_text())["sample_quality"]
    assert saved["frechet"]["lo"] <= saved["frechet"]["mean"] <= saved["frechet"]["hi"]


@pytest.mark.slow
def test_the_digits_classifier_recipe_reproduces_its_accuracy():
    entry = clf.entry_for("digits")
    _, result = clf.train_classifier(entry.recipe)
    assert result["test_accuracy"] == pytest.approx(entry.test_accuracy, abs=0.02)


def test_scores_of_a_set_against_itself_are_ideal():
    ds = load_dataset(DataConfig(name="digits", binarize="none"))
    net, _ = clf.load_classifier("digits")
    s = _scores(net, _features(net, ds.test), ds.test)
    assert abs(s["frechet"]) < 1e-6 and s["precision"] == 1.0 and s["recall"] == 1.0
