"""KL schedules (the weight beta_t of the KL term by training step) and free bits (a floor under each unit's KL).

Both change only the loss: the logged bound stays the true ELBO (beta = 1, no floor). ``KLSchedule`` is the typed
config (``ObjectiveConfig.schedule``); ``SCHEDULES`` maps each name to its factor, multiplied into the config's beta:
- ``constant``: 1.
- ``linear`` warm-up (Bowman et al. 2016): min(1, t / warmup_steps), from 0 at the first step.
- ``cyclical`` (Fu et al. 2019): tau = (t mod period) / period; min(1, tau / ramp): a warm-up repeated every
  ``period`` steps, rising over the first ``ramp`` fraction of each cycle and held at 1 for the rest.
Free bits (Kingma et al. 2016): the loss penalises sum_u max(lambda, KL_u) with KL_u the batch mean of unit u's
closed-form KL, so a unit below lambda nats gets no push towards the prior.

References: Bowman et al., Generating Sentences from a Continuous Space, CoNLL 2016; Fu et al., Cyclical Annealing
Schedule: A Simple Approach to Mitigating KL Vanishing, NAACL 2019; Kingma et al., Improved Variational Inference
with Inverse Autoregressive Flow, NeurIPS 2016.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vaezoo.core.errors import VaezooError


def _constant(s: KLSchedule, step: int) -> float:
    return 1.0


def _linear(s: KLSchedule, step: int) -> float:
    return min(1.0, step / s.warmup_steps)


def _cyclical(s: KLSchedule, step: int) -> float:
    return min(1.0, (step % s.period) / s.period / s.ramp)


SCHEDULES: dict[str, Callable[[KLSchedule, int], float]] = {"constant": _constant, "linear": _linear, "cyclical": _cyclical}


@dataclass
class KLSchedule:
    """name: constant | linear | cyclical; warmup_steps: linear's T_warm; period and ramp: cyclical's T and R."""

    name: str = "constant"
    warmup_steps: int = 0
    period: int = 0
    ramp: float = 0.5

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise VaezooError(f"unknown KL schedule '{self.name}'; choose from {', '.join(SCHEDULES)}")
        if self.warmup_steps < 0 or self.period < 0:
            raise VaezooError(f"warm-up steps and period must be >= 0, got {self.warmup_steps} and {self.period}")
        if not 0 < self.ramp <= 1:  # nan fails too
            raise VaezooError(f"the cyclical schedule's ramp must be in (0, 1], got {self.ramp}")
        if self.name == "linear" and self.warmup_steps == 0:
            raise VaezooError("the linear KL schedule needs warm-up steps > 0")
        if self.name == "cyclical" and self.period == 0:
            raise VaezooError("the cyclical KL schedule needs a period > 0 (steps per cycle)")

    def factor(self, step: int) -> float:
        """The schedule's multiplier of beta at training step ``step`` (0-based)."""
        return SCHEDULES[self.name](self, step)


def check_free_bits(free_bits: float) -> None:
    if not 0 <= free_bits < math.inf:  # nan fails too
        raise VaezooError(f"free bits (lambda, nats per latent unit) must be >= 0 and finite, got {free_bits}")


def penalised_kl(kl_per_unit: torch.Tensor, free_bits: float, batch_mean=None) -> torch.Tensor:
    """[B]: the KL the loss penalises, per datapoint, from the closed-form KL per unit [B, d]. Its batch mean is
    sum_u max(free_bits, mean_b KL_u): a unit whose batch mean is below the floor counts as the floor, a constant.
    ``batch_mean`` ([B, d] -> [d]; default: the mean over these rows): under data-parallel training, the mean over
    the global batch, so every rank floors the same units as one process would."""
    if free_bits <= 0:
        return kl_per_unit.sum(-1)
    means = kl_per_unit.detach().mean(0) if batch_mean is None else batch_mean(kl_per_unit.detach())
    below = means < free_bits  # [d]
    return torch.where(below, torch.full_like(kl_per_unit, free_bits), kl_per_unit).sum(-1)
