"""The two distances between sets of feature vectors (rows), in float64.

Fréchet distance (Dowson & Landau 1982; as FID, Heusel et al. 2017): fit a Gaussian to each set and take
|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)); tr (S_a S_b)^(1/2) is the sum of the square roots of
the eigenvalues of S_a^(1/2) S_b S_a^(1/2), which is symmetric, so no general matrix square root is needed.
It is biased upwards at finite n: compare figures at the same set sizes.

Precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of balls around its points
with radius the distance to the point's k-th nearest neighbour in its own set; precision is the share of
generated points inside the real manifold, recall the share of real points inside the generated one.
"""

from __future__ import annotations

import torch

from vaezoo.core.errors import VaezooError


def _check(a: torch.Tensor, b: torch.Tensor, least: int) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise VaezooError(f"feature sets must be [n, d] with the same d, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(len(a), len(b)) < least:
        raise VaezooError(f"each feature set needs at least {least} rows, got {len(a)} and {len(b)}")


def _sqrt_psd(s: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(s)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to the rows of a [n, d] and b [m, d]."""
    _check(a, b, 2)
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root = _sqrt_psd(s_a)
    cross = torch.linalg.eigvalsh(root @ s_b @ root).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + torch.trace(s_a) + torch.trace(s_b) - 2 * cross)


def _radii(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # the 0th neighbour is the point itself


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of the ``fake`` rows against the ``real`` rows, k-nearest-neighbour balls."""
    _check(real, fake, k + 1)
    real, fake = real.double(), fake.double()
    d = torch.cdist(fake, real)  # [n_fake, n_real]
    precision = (d <= _radii(real, k).unsqueeze(0)).any(1).double().mean()
    recall = (d <= _radii(fake, k).unsqueeze(1)).any(0).double().mean()
    return float(precision), float(recall)
