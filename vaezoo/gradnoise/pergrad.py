"""Gradients of an objective's surrogate, one per draw, vectorised with torch.func (vmap over grad).

A draw is a minibatch x [B, *shape] with its latent noise eps [K, B, d]; a per-example gradient is a draw
with B = 1. What is differentiated is the estimator's surrogate averaged over the draw's batch (that is,
-loss), so each gradient is the estimator's gradient of the bound. The estimator must hold no state that
changes between draws (the score baseline is not updated: baseline_decay = 0; it may be held at a fixed
value), which makes every draw a pure function of (params, x, eps).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from vaezoo.objectives import Objective, ObjectiveConfig

NETWORKS = ("encoder", "decoder")


class Surrogate(nn.Module):
    """(x, eps) -> the batch-mean surrogate of an objective on a model; a module so that
    torch.func.functional_call can swap in the parameters being differentiated."""

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self.objective.estimate(self.model, x, eps).surrogate.mean()


def network_of(name: str) -> str:
    """Encoder parameters are phi; everything else (decoder, a learned likelihood scale, the VampPrior's
    pseudo-inputs, which are the prior's) is theta."""
    return "encoder" if name.startswith("model.encoder.") else "decoder"


class DrawGradients:
    """Flat gradients per network for a stack of draws: x [n, B, *shape], eps [n, K, B, d] -> {net: [n, P_net]}."""

    def __init__(self, model: nn.Module, cfg: ObjectiveConfig, baseline: float | None = None) -> None:
        cfg = dataclasses.replace(cfg, baseline_decay=0.0)
        objective = Objective(cfg)
        objective.check_model(model)
        if baseline is not None:  # the score estimator's baseline, held fixed (vaezoo.gradnoise.baseline)
            objective.estimator.baseline = baseline
        self.cfg, self.baseline = cfg, baseline
        self.module = Surrogate(model, objective)
        self.params = {n: p.detach() for n, p in self.module.named_parameters()}
        self.buffers = dict(self.module.named_buffers())
        self.names = {net: [n for n in self.params if network_of(n) == net] for net in NETWORKS}
        self.sizes = {net: sum(self.params[n].numel() for n in names) for net, names in self.names.items()}
        self._vmapped = vmap(grad(self._value), in_dims=(None, 0, 0))

    def _value(self, params: dict, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, (params, self.buffers), (x, eps))

    def _flat(self, grads: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
        return {net: torch.cat([grads[k].reshape(n, -1) for k in names], 1) for net, names in self.names.items()}

    def __call__(self, x: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
        """All draws at once through torch.func: vmap over the draws of grad of the surrogate."""
        with torch.no_grad():  # torch.func.grad tracks its own graph; nothing outside needs one
            return self._flat(self._vmapped(self.params, x, eps), x.shape[0])

    def loop(self, x: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
        """The same gradients from a plain Python loop over the draws with autograd (the reference)."""
        params = {k: v.clone().requires_grad_(True) for k, v in self.params.items()}
        rows = []
        for i in range(x.shape[0]):
            value = functional_call(self.module, (params, self.buffers), (x[i], eps[i]))
            rows.append(dict(zip(params, torch.autograd.grad(value, list(params.values()), allow_unused=True))))
        stacked = {
            k: torch.stack([r[k] if r[k] is not None else torch.zeros_like(v) for r in rows]) for k, v in params.items()
        }
        return self._flat(stacked, x.shape[0])
