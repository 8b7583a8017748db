"""``Objective``: one bound and one encoder-gradient estimator, validated together, applied to a model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial

import torch

from vaezoo.core.errors import VaezooError
from vaezoo.objectives.base import Estimate
from vaezoo.objectives.bounds import BOUNDS
from vaezoo.objectives.dreg import DReG
from vaezoo.objectives.reparam import Reparam
from vaezoo.objectives.schedules import KLSchedule, check_free_bits
from vaezoo.objectives.score import Score
from vaezoo.objectives.stl import STL

ESTIMATORS = {cls.name: cls for cls in (Reparam, Score, STL, DReG)}
ALL_BOUNDS = (*BOUNDS, "recon")


@dataclass
class ObjectiveConfig:
    """bound: elbo | iwae | miwae | recon (autoencoder); k: samples per datapoint (MIWAE: inner samples per outer
    one); m: MIWAE's outer samples (M x K draws per datapoint; 1 for every other bound); beta: weight of the KL term;
    estimator: reparam | score | stl | dreg; kl: auto | analytic | mc (auto = analytic where the estimator
    allows it); baseline_decay: the score estimator's moving-average baseline (0 = none); schedule: how beta moves
    with the training step (``vaezoo.objectives.schedules``); free_bits: lambda, the floor in nats under each latent
    unit's batch-mean KL in the loss (0 = none; closed-form KL only)."""

    bound: str = "elbo"
    k: int = 1
    m: int = 1
    beta: float = 1.0
    estimator: str = "reparam"
    kl: str = "auto"
    baseline_decay: float = 0.9
    schedule: KLSchedule = field(default_factory=KLSchedule)
    free_bits: float = 0.0

    def __post_init__(self) -> None:
        if self.bound not in ALL_BOUNDS:
            raise VaezooError(f"unknown bound '{self.bound}'; choose from {', '.join(ALL_BOUNDS)}")
        if self.estimator not in ESTIMATORS:
            raise VaezooError(f"unknown estimator '{self.estimator}'; choose from {', '.join(ESTIMATORS)}")
        if self.k < 1:
            raise VaezooError(f"k (samples per datapoint) must be >= 1, got {self.k}")
        if self.m < 1 or (self.m != 1 and self.bound != "miwae"):
            raise VaezooError(f"m (outer samples) must be >= 1, and is defined for the miwae bound only; got m={self.m} "
                              f"with bound '{self.bound}'")
        if not 0 <= self.beta < math.inf:  # nan fails too
            raise VaezooError(f"beta must be >= 0 and finite, got {self.beta}")
        if not 0 <= self.baseline_decay < 1:
            raise VaezooError(f"baseline_decay must be in [0, 1), got {self.baseline_decay}")
        if self.kl not in ("auto", "analytic", "mc"):
            raise VaezooError(f"kl must be auto, analytic or mc, got '{self.kl}'")
        check_free_bits(self.free_bits)
        self._check_pair()

    def _check_pair(self) -> None:
        """The bound and the estimator apply to each other; 'auto' KL becomes the estimator's first mode."""
        if self.bound == "recon":
            if self.estimator != "reparam" or self.k != 1:
                raise VaezooError(
                    f"bound 'recon' (autoencoder) has no latent noise: estimator '{self.estimator}' and k={self.k} do not apply"
                )
            return
        est = ESTIMATORS[self.estimator]
        if self.bound not in est.bounds:
            raise VaezooError(
                f"estimator '{self.estimator}' does not apply to bound '{self.bound}' (it applies to: {', '.join(est.bounds)})"
            )
        modes = est.kl_modes if self.bound == "elbo" else ("mc",)
        if self.kl == "auto":
            self.kl = modes[0]
        elif self.kl not in modes:
            raise VaezooError(
                f"kl='{self.kl}' does not apply to estimator '{self.estimator}' with bound '{self.bound}' (allowed: {', '.join(modes)})"
            )
        if self.bound != "elbo" and (self.beta != 1.0 or self.schedule.name != "constant" or self.free_bits):
            raise VaezooError(f"beta != 1, KL schedules and free bits are defined for the ELBO only, not for the {self.bound} bound")
        if self.free_bits and self.kl != "analytic":
            raise VaezooError(f"free bits need the closed-form KL per unit: kl='{self.kl}' (estimator '{self.estimator}') "
                              "has only a sampled KL; use kl=analytic with estimator reparam or score")


@dataclass
class ObjectiveOutput:
    """bound: nats per datapoint (batch mean); loss: -mean(surrogate); per_datapoint: the bound [B];
    terms: diagnostics (recon, kl) as batch means."""

    bound: torch.Tensor
    loss: torch.Tensor
    per_datapoint: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


class Objective:
    """Draws eps, encodes once, and hands (model, x, q, eps) to the estimator. ``set_step`` moves the KL weight to
    the schedule's value at a training step; until it is called, the weight is the config's beta."""

    def __init__(self, cfg: ObjectiveConfig) -> None:
        self.cfg = cfg
        self.estimator = ESTIMATORS[cfg.estimator](cfg) if cfg.bound != "recon" else None
        # the bound as a function of log w [draws, B]; MIWAE's needs its M to find its groups
        self.bound = partial(BOUNDS["miwae"], outer=cfg.m) if cfg.bound == "miwae" else BOUNDS.get(cfg.bound)
        # (index, count) of this process's equal share of a data-parallel global batch: the noise is drawn for
        # the whole global batch and this share's rows kept, so a datapoint's noise does not depend on how many
        # processes split the batch (vaezoo.training.distributed). (0, 1): one process, the plain draw.
        self.shard: tuple[int, int] = (0, 1)

    def set_step(self, step: int) -> None:
        """The KL weight for training step ``step`` (0-based): beta x the schedule's factor."""
        if self.estimator is not None:
            self.estimator.beta = self.cfg.beta * self.cfg.schedule.factor(step)

    def check_model(self, model) -> None:
        """Refuse a model/objective pair that makes no sense (e.g. an ELBO or DReG on an autoencoder)."""
        if model.stochastic == (self.cfg.bound == "recon"):
            need = "a stochastic encoder" if model.stochastic is False else "a deterministic autoencoder"
            raise VaezooError(
                f"bound '{self.cfg.bound}' with estimator '{self.cfg.estimator}' needs {need}; "
                f"model '{model.cfg.name}' is {'stochastic' if model.stochastic else 'deterministic'}"
            )
        if self.cfg.kl == "analytic" and not getattr(model, "standard_prior", True):
            # the closed-form KL is to N(0, I); free bits need it (ObjectiveConfig refuses them without it)
            raise VaezooError(
                f"kl='analytic'{' (needed by free bits)' if self.cfg.free_bits else ''} is the closed-form KL to "
                f"N(0, I); model '{model.cfg.name}' has another prior, whose KL has no closed form: use kl=mc"
            )

    def __call__(self, model, x: torch.Tensor, generator: torch.Generator | None = None) -> ObjectiveOutput:
        if self.cfg.bound == "recon":
            recon = model.log_likelihood(x, model.encode(x).mu)
            return ObjectiveOutput(recon.mean(), -recon.mean(), recon, {"recon": recon.mean()})
        q = model.encode(x)
        draws = self.cfg.k * self.cfg.m
        index, count = self.shard
        b = q.mu.shape[0]
        eps = torch.randn((draws, b * count, *q.mu.shape[1:]), generator=generator, device=q.mu.device,
                          dtype=q.mu.dtype)[:, index * b : (index + 1) * b]
        est = self.estimator(model, x, q, eps, self.bound)
        # no second KL where one exists; the closed form to N(0, I) where that is the prior; the draws' own otherwise
        kl = est.kl if est.kl is not None else (
            q.kl_standard_normal() if getattr(model, "standard_prior", True) else est.log_weights.sampled_kl())
        penalised = est.kl_penalised if est.kl_penalised is not None else kl  # a sampled KL has no floor
        # the true KL, and what the loss penalised: beta x kl_penalised (free bits floor each unit's KL)
        terms = {"kl": kl.mean().detach(), "beta": kl.new_full((), self.estimator.beta),  # a fill, not a copy: no sync
                 "kl_penalised": penalised.mean().detach()}
        return ObjectiveOutput(est.value.mean(), -est.surrogate.mean(), est.value, terms)

    def estimate(self, model, x: torch.Tensor, eps: torch.Tensor) -> Estimate:
        """The estimate for given noise eps [M K, B, d]: a pure function of (parameters, x, eps), as
        torch.func needs (per-example gradients in vaezoo.gradnoise)."""
        return self.estimator(model, x, model.encode(x), eps, self.bound)

    def state_dict(self) -> dict:
        return self.estimator.state_dict() if self.estimator is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.estimator is not None:
            self.estimator.load_state_dict(state)
