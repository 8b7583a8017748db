"""What every gradient estimator is: a named unit that turns (model, x, q, eps, bound) into an ``Estimate``.

An estimator says which bounds it applies to and which KL forms it allows; ``ObjectiveConfig`` checks a
bound/estimator pair against these before anything runs. Estimators with state (the score estimator's
moving-average baseline) override ``state_dict``/``load_state_dict`` so checkpoints carry it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from vaezoo.objectives.log_weights import LogWeight
from vaezoo.objectives.schedules import penalised_kl


@dataclass
class Estimate:
    """``value``: the bound per datapoint [B] (what is logged); ``surrogate``: per datapoint [B],
    whose gradient is the estimator's (the loss is -mean(surrogate)). Never log the surrogate."""

    value: torch.Tensor
    surrogate: torch.Tensor
    kl: torch.Tensor | None = None  # closed-form KL per datapoint, where the estimator computed it anyway
    kl_penalised: torch.Tensor | None = None  # the KL the loss penalises (free bits' floor applied) before beta
    log_weights: LogWeight | None = None  # sampled-KL paths: the draws' log weights (their sampled KL for the logs)


Bound = Callable[[torch.Tensor], torch.Tensor]  # log w [K, B] -> bound per datapoint [B]


class Estimator:
    """Base of the encoder-gradient estimators. Subclasses set ``name``, ``bounds`` and ``kl_modes`` (the
    first is the default) and implement ``__call__``; ``cfg`` is the ``ObjectiveConfig`` (beta, kl, k, free_bits).
    ``beta`` is the KL weight of the current step: the config's beta unless a schedule changes it (``Objective``)."""

    name: ClassVar[str]
    bounds: ClassVar[tuple[str, ...]]
    kl_modes: ClassVar[tuple[str, ...]]

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.beta: float = cfg.beta
        # [B, d] -> [d]: the batch mean that free bits floor; data-parallel training sets the global batch's
        # (vaezoo.training.distributed); None: the mean over the rows at hand
        self.batch_mean: Callable[[torch.Tensor], torch.Tensor] | None = None

    def analytic_kl(self, q) -> tuple[torch.Tensor, torch.Tensor]:
        """(KL(q || N(0, I)), the KL the loss penalises) per datapoint, both in closed form; the second has each
        unit's batch mean floored at ``cfg.free_bits`` nats (free bits; the same as the first when it is 0)."""
        kl_u = q.kl_per_unit()
        return kl_u.sum(-1), penalised_kl(kl_u, self.cfg.free_bits, self.batch_mean)

    def __call__(self, model, x: torch.Tensor, q, eps: torch.Tensor, bound: Bound) -> Estimate:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """State that a resumed run needs (none by default)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""
