"""How good are a model's prior samples? The Fréchet distance and precision/recall (Kynkäänniemi et al.
2019) between decoded prior samples and test images, in the feature space of a small classifier that vaezoo
trains with a fixed recipe and ships like its decoders (``classifier``), so it works offline.

Not comparable to Inception FID: another network, another feature space, 28x28 or 8x8 digits. Compare
figures from the same classifier, dataset and sample count only.
"""

from vaezoo.sample_quality.classifier import CLASSIFIER_MANIFEST, ClassifierEntry, load_classifier
from vaezoo.sample_quality.measures import frechet_distance, precision_recall
from vaezoo.sample_quality.report import sample_quality

__all__ = [
    "CLASSIFIER_MANIFEST",
    "ClassifierEntry",
    "frechet_distance",
    "load_classifier",
    "precision_recall",
    "sample_quality",
]
