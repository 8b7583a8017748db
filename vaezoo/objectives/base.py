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


@dataclass
class Estimate:
    """``value``: the bound per datapoint [B] (what is logged); ``surrogate``: per datapoint [B],
    whose gradient is the estimator's (the loss is -mean(surrogate)). Never log the surrogate."""

    value: torch.Tensor
    surrogate: torch.Tensor
    kl: torch.Tensor | None = None  # closed-form KL per datapoint, where the estimator computed it anyway


Bound = Callable[[torch.Tensor], torch.Tensor]  # log w [K, B] -> bound per datapoint [B]


class Estimator:
    """Base of the encoder-gradient estimators. Subclasses set ``name``, ``bounds`` and ``kl_modes`` (the
    first is the default) and implement ``__call__``; ``cfg`` is the ``ObjectiveConfig`` (beta, kl, k)."""

    name: ClassVar[str]
    bounds: ClassVar[tuple[str, ...]]
    kl_modes: ClassVar[tuple[str, ...]]

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def __call__(self, model, x: torch.Tensor, q, eps: torch.Tensor, bound: Bound) -> Estimate:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """State that a resumed run needs (none by default)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""
