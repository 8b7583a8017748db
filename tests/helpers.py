"""Test helpers shared by several test files (import as `from helpers import ...`)."""

from __future__ import annotations

import torch


def flat_grad(model) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in model.parameters()])


def grad_draws(model, objective, x: torch.Tensor, draws: int, seed: int = 0) -> torch.Tensor:
    """[draws, n_params]: the estimator's gradient of the *bound* (-loss) on a fixed batch, fresh noise each draw."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(draws):
        model.zero_grad(set_to_none=True)
        objective(model, x, g).loss.neg().backward()
        rows.append(flat_grad(model).double())
    return torch.stack(rows)


def run_cli(*args: str) -> int:
    from vaezoo.cli import main

    return main(list(args))
