"""The mutual information gap (MIG; Chen et al. 2018, "Isolating sources of disentanglement in VAEs"), pure and
checked on codes whose answer is known (tests/test_study_measures.py, and the controls every beta-sweep report shows).

For each factor k with entropy H(v_k): the mutual information between v_k and each latent unit's mean, the mean
discretised into equal-width bins over its range (disentanglement_lib's discrete estimate, 20 bins), then the gap
between the largest and second-largest, over H(v_k). MIG is the mean gap over factors: 1 when each factor lives
in one unit that holds it exactly and no other unit knows it; 0 when no unit knows any factor (constant or noise
codes) or when two units know it equally (a rotated or copied code). The plug-in MI is biased upwards by about
(bins - 1)(values - 1) / (2N) nats, so noise scores a little above 0 at small N.
"""

from __future__ import annotations

import numpy as np

BINS = 20


def discretise(codes: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Each column of codes [N, d] in ``bins`` equal-width bins over its own range (a constant column: bin 0)."""
    codes = np.asarray(codes, dtype=np.float64)
    lo, hi = codes.min(0), codes.max(0)
    width = np.where(hi > lo, (hi - lo) / bins, 1.0)
    return np.clip(((codes - lo) / width).astype(np.int64), 0, bins - 1)


def entropy(values: np.ndarray) -> float:
    """Plug-in entropy (nats) of a discrete vector."""
    p = np.unique(values, return_counts=True)[1] / len(values)
    return float(-(p * np.log(p)).sum())


def discrete_mi(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information (nats) of two discrete vectors, from their contingency table."""
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    joint = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(joint, (ia, ib), 1.0)
    joint /= len(a)
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(max(0.0, (joint[nz] * np.log(joint[nz] / outer[nz])).sum()))


def mig(codes: np.ndarray, factors: np.ndarray, bins: int = BINS) -> dict:
    """MIG of codes [N, d] (latent means) against discrete factors [N, K]: {"mig", "gaps" [K], "mi" [K][d]
    (normalised by each factor's entropy), "top_unit" [K]}."""
    codes, factors = np.asarray(codes), np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise ValueError(f"codes [N, d] and factors [N, K] must have the same N, got {codes.shape} and {factors.shape}")
    if codes.shape[1] < 2:
        raise ValueError("MIG needs at least 2 latent units (it is a gap between the top two)")
    binned = discretise(codes, bins)
    gaps, mi, top = [], [], []
    for k in range(factors.shape[1]):
        h = entropy(factors[:, k])
        if h == 0:
            raise ValueError(f"factor {k} takes one value: its entropy is 0 and MIG is undefined")
        row = np.array([discrete_mi(binned[:, j], factors[:, k]) for j in range(codes.shape[1])]) / h
        first, second = np.sort(row)[::-1][:2]
        gaps.append(float(first - second))
        mi.append(row.tolist())
        top.append(int(row.argmax()))
    return {"mig": float(np.mean(gaps)), "gaps": gaps, "mi": mi, "top_unit": top}


def mig_controls(factors: np.ndarray, seed: int = 0, noise_units: int = 4, rotations: int = 10) -> dict[str, float]:
    """MIG of codes built from the factors themselves, whose answer is known: the factors plus noise units (~1); the
    standardised factors rotated 45 degrees in pairs (0: two units know each factor equally; even K only); random rotations of
    them (low: each unit mixes the factors; the mean over ``rotations``); each factor copied into two units (0: the
    gap, not the information, is scored); a constant (0); pure noise (~0, the estimator's bias)."""
    rng = np.random.default_rng(seed)
    f = np.asarray(factors, dtype=np.float64)
    n, k = f.shape
    z = (f - f.mean(0)) / f.std(0)
    codes = {
        f"the factors + {noise_units} noise units": np.hstack([f, rng.standard_normal((n, noise_units))]),
        "each factor copied into two units": np.hstack([f, f]),
        "constant": np.zeros((n, k + noise_units)),
        "pure noise": rng.standard_normal((n, k + noise_units)),
    }
    if k % 2 == 0:  # (a + b, a - b) / sqrt 2 per pair of factors
        codes["the factors rotated 45 degrees in pairs"] = z @ np.kron(np.eye(k // 2), np.sqrt(0.5) * np.array([[1.0, 1.0], [1.0, -1.0]]))
    out = {label: mig(c, factors)["mig"] for label, c in codes.items()}
    rotated = [mig(z @ np.linalg.qr(rng.standard_normal((k, k)))[0], factors)["mig"] for _ in range(rotations)]
    out[f"random rotations of the factors (mean of {rotations})"] = float(np.mean(rotated))
    return out
