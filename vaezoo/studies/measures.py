"""Measures the studies rest on, each pure and checked on inputs whose answer is known (tests/test_study_measures.py
and the controls every prior-sampling report shows).

- ``prior_mmd``: how far the codes the decoder was trained on (the aggregate posterior: f(x) for an AE, one
  z ~ q(z|x) per x for a VAE) lie from the prior N(0, I) that generation samples from. The unbiased squared
  maximum mean discrepancy (Gretton et al. 2012) with a Gaussian kernel whose bandwidth is fixed by the prior
  (h^2 = d, the latent size: prior pairs sit at squared distance ~2d), so every model is scored on one scale;
  0 is the ideal, and a permutation p-value says whether the two samples can be told apart at all. It replaces
  the dead-zone fraction of the old ``bench claims``, which measured codes against the model's *own* held-out
  codes and so scored N(0, 21 I) codes 0.000.
- ``nn_distance``: mean Euclidean distance (pixels in [0, 1]) from each generated image to its nearest test image.
- ``knn_accuracy``: k-nearest-neighbour class accuracy of test features against training features.
"""

from __future__ import annotations

import torch


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a.double(), b.double()).pow(2)


def mmd2_by_membership(k0: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 for each row of ``member`` [P, N] (1: the row is in x, 0: in y), from the pooled kernel
    matrix with its diagonal zeroed: the sums over pairs are quadratic forms, so P shufflings are two matmuls."""
    a = member.double()
    b = 1 - a
    n, m = a.sum(1), b.sum(1)
    ka, kb = a @ k0, b @ k0
    return (ka * a).sum(1) / (n * (n - 1)) + (kb * b).sum(1) / (m * (m - 1)) - 2 * (ka * b).sum(1) / (n * m)


def mmd_test(x: torch.Tensor, y: torch.Tensor, bandwidth2: float, permutations: int = 200,
             generator: torch.Generator | None = None) -> dict:
    """Unbiased MMD^2 between samples x [n, d] and y [m, d] (Gaussian kernel exp(-|a-b|^2 / (2 h^2))) and its
    permutation p-value: the share of label shufflings (plus the observed one) scoring at least as high."""
    pooled = torch.cat([x, y]).double()
    k0 = torch.exp(-_sq_dists(pooled, pooled) / (2 * bandwidth2))
    k0.fill_diagonal_(0)
    observed_member = torch.zeros(1, len(pooled), dtype=torch.float64)
    observed_member[0, : len(x)] = 1
    shuffles = torch.stack([observed_member[0, torch.randperm(len(pooled), generator=generator)] for _ in range(permutations)])
    observed = float(mmd2_by_membership(k0, observed_member)[0])
    null = mmd2_by_membership(k0, shuffles)
    p_value = (1 + int((null >= observed).sum())) / (1 + permutations)
    return {"mmd2": observed, "p_value": p_value, "null_mean": float(null.mean()), "null_sd": float(null.std())}


def prior_mmd(codes: torch.Tensor, generator: torch.Generator, n: int = 500, permutations: int = 200) -> dict:
    """MMD^2 between ``n`` codes (a seeded subsample) and ``n`` fresh N(0, I) draws, bandwidth h^2 = d."""
    d = codes.shape[1]
    idx = torch.randperm(len(codes), generator=generator)[:n]
    prior = torch.randn(min(n, len(codes)), d, generator=generator, dtype=torch.float64)
    return mmd_test(codes[idx].double(), prior, float(d), permutations, generator)


def prior_mmd_controls(d: int, generator: torch.Generator, n: int = 500, permutations: int = 200) -> dict:
    """The measure on codes whose answer is known: exactly N(0, I) must score near 0 (and not be told apart);
    too wide N(0, 21 I) and too narrow N(0, 0.01 I) must score far from it; so must codes on a sheet (half of
    the units always 0: an AE-like manifold inside the prior's support)."""

    def sheet(m: int) -> torch.Tensor:
        z = torch.randn(m, d, generator=generator, dtype=torch.float64)
        z[:, d // 2 :] = 0
        return z

    draws = {
        "N(0, I)": lambda m: torch.randn(m, d, generator=generator, dtype=torch.float64),
        "N(0, 21 I)": lambda m: 21**0.5 * torch.randn(m, d, generator=generator, dtype=torch.float64),
        "N(0, 0.01 I)": lambda m: 0.1 * torch.randn(m, d, generator=generator, dtype=torch.float64),
        "half the units 0": sheet,
    }
    return {label: prior_mmd(draw(n), generator, n, permutations) for label, draw in draws.items()}


def prior_mmd_null(d: int, generator: torch.Generator, repeats: int = 20, n: int = 500, permutations: int = 200,
                   alpha: float = 0.05) -> dict:
    """The exact-prior control repeated: ``repeats`` independent sets of N(0, I) codes, each tested against fresh
    prior draws. A calibrated test rejects about ``alpha`` of them and MMD^2's mean is 0 (unbiased); one fixed draw
    cannot show either (it lands in the tail now and then), ``repeats`` of them can."""
    from vaezoo.core.intervals import proportion_interval, t_interval

    runs = [prior_mmd(torch.randn(n, d, generator=generator, dtype=torch.float64), generator, n, permutations)
            for _ in range(repeats)]
    rejected = sum(r["p_value"] < alpha for r in runs)
    return {"alpha": alpha, "rejected": proportion_interval(rejected, repeats),
            "mmd2": t_interval([r["mmd2"] for r in runs]), "p_values": [r["p_value"] for r in runs]}


def nn_distance(samples: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over samples of the Euclidean distance to the nearest reference row (images flattened)."""
    a, b = samples.reshape(len(samples), -1).double(), reference.reshape(len(reference), -1).double()
    return float(torch.cdist(a, b).min(1).values.mean())


def knn_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 k: int = 5) -> float:
    """Share of test rows whose k nearest training rows (Euclidean) vote for their label (ties: the smaller label)."""
    d = torch.cdist(test_x.reshape(len(test_x), -1).double(), train_x.reshape(len(train_x), -1).double())
    nearest = d.topk(k, largest=False).indices
    votes = train_y[nearest]
    predicted = torch.mode(votes, dim=1).values
    return float((predicted == test_y).double().mean())


def off_support_ratio(points: torch.Tensor, train_codes: torch.Tensor, heldout_codes: torch.Tensor) -> float:
    """Median distance of ``points`` to the nearest training code over the median of the same for held-out codes:
    ~1 (or below) where the points lie among the codes, >> 1 where they fall in gaps. Relative to the model's own
    codes, so it asks where *this* decoder was trained (for prior draws, which must match N(0, I), use prior_mmd)."""
    near = torch.cdist(points.double(), train_codes.double()).min(1).values.median()
    ref = torch.cdist(heldout_codes.double(), train_codes.double()).min(1).values.median()
    return float(near / ref)


def off_support_controls(d: int, generator: torch.Generator, n: int = 2000, pairs: int = 500) -> dict:
    """``off_support_ratio`` of midpoints of random code pairs, for code sets whose answer is known."""

    def ball(m):
        return torch.randn(m, d, generator=generator, dtype=torch.float64)

    def sheet(m):
        z = ball(m)
        z[:, d // 2 :] = 0
        return z

    def clusters(m):
        z = 0.3 * ball(m)
        z[: m // 2, 0] += 5
        z[m // 2 :, 0] -= 5
        return z[torch.randperm(m, generator=generator)]

    def shell(m):
        z = ball(m)
        return 3 * z / z.norm(dim=1, keepdim=True) + 0.05 * ball(m)

    out = {}
    for label, draw in (("ball N(0, I)", ball), ("flat sheet", sheet), ("two clusters", clusters), ("sphere shell", shell)):
        codes, held = draw(n), draw(500)
        a, b = torch.randint(n, (pairs,), generator=generator), torch.randint(n, (pairs,), generator=generator)
        out[label] = off_support_ratio((codes[a] + codes[b]) / 2, codes, held)
    return out
