"""``sample_quality(model, dataset)``: the Fréchet distance and precision/recall of a model's prior samples
against the test images, over independent sample sets (mean and t-interval), beside two controls measured
the same way: held-out real images (the train split; near the ideal) and uniform noise (far from it).

A sample is the decoder's mean image at z ~ N(0, I) (Bernoulli probabilities: a grey image, as the test
images are). Every set has as many samples as there are test images, so figures are comparable.
"""

from __future__ import annotations

import torch

from vaezoo.core.errors import VaezooError
from vaezoo.core.intervals import t_interval
from vaezoo.sample_quality.classifier import load_classifier
from vaezoo.sample_quality.measures import frechet_distance, precision_recall

SETS = 5
FEATURE_BATCH = 500


def _features(net, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([net.features(x[i : i + FEATURE_BATCH]) for i in range(0, len(x), FEATURE_BATCH)])


def _scores(net, real_features: torch.Tensor, images: torch.Tensor) -> dict[str, float]:
    f = _features(net, images)
    precision, recall = precision_recall(real_features, f)
    return {"frechet": frechet_distance(real_features, f), "precision": precision, "recall": recall}


def _interval(values: list[float], level: float) -> dict:
    """The sample sets' t-interval, with the per-set values under the key eval.json has always used."""
    iv = t_interval(values, level)
    return {"mean": iv["mean"], "lo": iv["lo"], "hi": iv["hi"], "per_set": iv["values"]}


def prior_samples(model, n: int, generator: torch.Generator) -> torch.Tensor:
    """n decoder mean images of the model's own prior draws (N(0, I), or a learned prior such as the VampPrior)."""
    return model.sample(n, generator).cpu().float()


def sample_quality(model, dataset, sets: int = SETS, seed: int = 0, level: float = 0.95) -> dict:
    """Sample metrics of ``model`` on ``dataset`` (a vaezoo.data.Dataset) with the shipped classifier."""
    if sets < 2:
        raise VaezooError(f"sample metrics need at least 2 sample sets for an interval, got {sets}")
    net, entry = load_classifier(dataset.name)
    real = dataset.test
    n = len(real)
    real_f = _features(net, real)
    per_set = []
    for s in range(sets):
        g = torch.Generator().manual_seed(seed * 1000 + s)
        per_set.append(_scores(net, real_f, prior_samples(model.eval(), n, g)))
    g = torch.Generator().manual_seed(seed)
    held_out = dataset.train[torch.randperm(len(dataset.train), generator=g)[:n]]
    noise = torch.rand(n, *real.shape[1:], generator=g)
    return {
        "classifier": entry.name,
        "classifier_sha256": entry.sha256,
        "classifier_test_accuracy": entry.test_accuracy,
        "n": n,
        "sets": sets,
        "level": level,
        **{k: _interval([s[k] for s in per_set], level) for k in ("frechet", "precision", "recall")},
        "controls": {"held_out_images": _scores(net, real_f, held_out), "uniform_noise": _scores(net, real_f, noise)},
        "note": "features of vaezoo's shipped digit classifier: not comparable to Inception FID",
    }
