"""Datasets by name (all usable offline), binarisation and seeded minibatch order; the analytic
linear-Gaussian model lives in ``vaezoo.data.linear_gaussian``. Knows nothing of models."""

from vaezoo.data.datasets import (
    BINARIZE_MODES,
    DATASET_NOTES,
    DATASET_SHAPES,
    TRAIN_SIZES,
    DataConfig,
    Dataset,
    batch_indices,
    binarize_batch,
    eval_binarized,
    load_dataset,
    train_size,
)

__all__ = [
    "BINARIZE_MODES",
    "DATASET_NOTES",
    "DATASET_SHAPES",
    "TRAIN_SIZES",
    "DataConfig",
    "Dataset",
    "batch_indices",
    "binarize_batch",
    "eval_binarized",
    "load_dataset",
    "train_size",
]
