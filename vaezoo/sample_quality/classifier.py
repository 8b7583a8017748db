"""The feature network of the sample-quality measures: a small convolutional digit classifier per image
size, trained by a fixed recipe (``RECIPES``) and shipped beside the decoders (``vaezoo/pretrained/``,
``classifiers.json``: file, sha256, size, parameter count, recipe, test accuracy). Features are the
penultimate layer's activations (``FEATURE_DIM``).

    python -m vaezoo.sample_quality.classifier build NAME     # retrain by the recipe, write file + manifest

Loading checks the sha256 before ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vaezoo.core.configs import from_dict, to_dict
from vaezoo.core.errors import VaezooError
from vaezoo.core.io import atomic_write_bytes, atomic_write_text

HERE = Path(__file__).resolve().parent.parent / "pretrained"
CLASSIFIER_MANIFEST = HERE / "classifiers.json"
FORMAT = "vaezoo-classifiers-1"
FEATURE_DIM = 64
N_CLASSES = 10


class FeatureNet(nn.Module):
    """conv(16) -> pool -> [conv(32) -> pool, on 28x28] -> linear(64) = features -> linear(10) = logits."""

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = [nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels, h, w = 16, h // 2, w // 2
        if h >= 8:  # a second block where the image is large enough (28 -> 14 -> 7)
            layers += [nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels, h, w = 32, h // 2, w // 2
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * h * w, FEATURE_DIM), nn.ReLU())
        self.head = nn.Linear(FEATURE_DIM, N_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@dataclass(frozen=True)
class Recipe:
    """How a shipped classifier is trained: on the dataset's train split (grey images, no binarisation)."""

    dataset: str
    epochs: int
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    threads: int = 1  # one thread: the same CPU gives the same weights, bit for bit


RECIPES = {
    "classifier.mnist5k": Recipe("mnist5k", epochs=20),
    "classifier.digits": Recipe("digits", epochs=60),
}
SERVES = {"classifier.mnist5k": ("mnist5k", "mnist"), "classifier.digits": ("digits",)}


@dataclass(frozen=True)
class ClassifierEntry:
    """One shipped classifier as classifiers.json records it."""

    name: str
    file: str
    sha256: str
    size_bytes: int
    parameter_count: int
    input_shape: tuple[int, ...]
    feature_dim: int
    datasets: tuple[str, ...]
    test_accuracy: float
    n_test: int
    recipe: Recipe
    training: dict


def read_manifest(path: Path = CLASSIFIER_MANIFEST) -> list[ClassifierEntry]:
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise VaezooError(f"{path}: format {data.get('format')!r}, expected {FORMAT!r}")
    return [from_dict(ClassifierEntry, e) for e in data["classifiers"]]


def entry_for(dataset: str) -> ClassifierEntry:
    entries = read_manifest()
    for e in entries:
        if dataset in e.datasets:
            return e
    have = sorted(d for e in entries for d in e.datasets)
    raise VaezooError(f"no shipped classifier for dataset '{dataset}' (sample metrics exist for: {', '.join(have)})")


def load_classifier(dataset: str) -> tuple[FeatureNet, ClassifierEntry]:
    """The shipped classifier serving ``dataset``, hash-checked, in eval mode."""
    import hashlib

    entry = entry_for(dataset)
    data = (HERE / entry.file).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise VaezooError(f"{HERE / entry.file}: sha256 {digest[:12]}..., the manifest says {entry.sha256[:12]}...")
    net = FeatureNet(tuple(entry.input_shape))
    net.load_state_dict(torch.load(io.BytesIO(data), weights_only=True))
    return net.eval(), entry


def accuracy(net: FeatureNet, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(x).argmax(1) == y).double().mean())


def train_classifier(recipe: Recipe) -> tuple[FeatureNet, dict]:
    """Train by the recipe; returns the net and {test_accuracy, n_test, seconds}."""
    from vaezoo.data import DataConfig, load_dataset

    ds = load_dataset(DataConfig(name=recipe.dataset, binarize="none"))
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        torch.manual_seed(recipe.seed)
        net = FeatureNet(ds.shape)
        opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
        g = torch.Generator().manual_seed(recipe.seed)
        t0 = time.perf_counter()
        for _ in range(recipe.epochs):
            order = torch.randperm(len(ds.train), generator=g)
            for i in range(0, len(order), recipe.batch_size):
                idx = order[i : i + recipe.batch_size]
                loss = nn.functional.cross_entropy(net(ds.train[idx]), ds.train_labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    net.eval()
    return net, {"test_accuracy": accuracy(net, ds.test, ds.test_labels), "n_test": len(ds.test), "seconds": seconds}


def build(name: str) -> ClassifierEntry:
    """Retrain ``name`` by its recipe, write its weights and its manifest entry (each atomically)."""
    import hashlib

    from vaezoo.tracking.provenance import cpu_model

    if name not in RECIPES:
        raise VaezooError(f"unknown classifier '{name}'; choose from {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    net, result = train_classifier(recipe)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    data = buf.getvalue()
    from vaezoo.data import DATASET_SHAPES

    entry = ClassifierEntry(
        name=name, file=f"{name}.pt", sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data),
        parameter_count=sum(p.numel() for p in net.parameters()), input_shape=tuple(DATASET_SHAPES[recipe.dataset]),
        feature_dim=FEATURE_DIM, datasets=SERVES[name], test_accuracy=round(result["test_accuracy"], 4),
        n_test=result["n_test"], recipe=recipe,
        training={"cpu": cpu_model(), "seconds": round(result["seconds"], 1), "torch": torch.__version__},
    )
    entries = {e.name: e for e in read_manifest()} if CLASSIFIER_MANIFEST.exists() else {}
    entries[name] = entry
    atomic_write_bytes(HERE / entry.file, data)
    manifest = {"format": FORMAT, "classifiers": [to_dict(e) for _, e in sorted(entries.items())]}
    atomic_write_text(CLASSIFIER_MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return entry


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "build":
        print(f"usage: python -m vaezoo.sample_quality.classifier build NAME  (NAME: {', '.join(RECIPES)})", file=sys.stderr)
        return 2
    try:
        e = build(argv[1])
    except VaezooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{e.name}: test accuracy {e.test_accuracy:.4f} on {e.n_test}, sha256 {e.sha256[:12]}..., {e.size_bytes} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
