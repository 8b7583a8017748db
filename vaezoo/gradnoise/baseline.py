"""The score estimator's baseline as training uses it, held fixed while its gradients are measured.

Training subtracts a moving average of the learning signal f (``ObjectiveConfig.baseline_decay``); at a
fixed model that average settles at the signal's mean E_x E_q[f]. The gradient-variance benchmark needs
each draw to be a pure function of (parameters, x, eps), so it holds the baseline at that settled value,
estimated from warm-up draws of their own seeded stream: a baseline that does not depend on the measured
z leaves the estimator unbiased. Without one (``--score-baseline none``) the encoder's variance is that of
f grad log q with f around minus a hundred nats: the figure training never sees.
"""

from __future__ import annotations

import torch

from vaezoo.objectives import Objective, ObjectiveConfig
from vaezoo.objectives.bounds import BOUNDS

WARMUP_DRAWS = 16
WARMUP_BATCH = 64
SCORE_BASELINES = ("trained", "none")


def settled_baseline(model, cfg: ObjectiveConfig, batch, noise, device,
                     draws: int = WARMUP_DRAWS, size: int = WARMUP_BATCH) -> float:
    """The mean learning signal over ``draws`` warm-up minibatches of ``size``: ``batch(B, i)`` and
    ``noise(K, B, i)`` give the i-th one's x [B, ...] and eps [K, B, d]."""
    estimator = Objective(cfg).estimator
    total = 0.0
    with torch.no_grad():
        for i in range(draws):
            x = batch(size, i).to(device)
            eps = noise(cfg.k, size, i).to(device)
            total += float(estimator.signal(model, x, model.encode(x), eps, BOUNDS[cfg.bound]).double().mean())
    return total / draws
