"""One training step, wrapped for a mode (eager, ``torch.compile`` of the whole step, a CUDA graph), and the
two contenders that run it: vaezoo's library path and the plain loop a user would write."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vaezoo.bench.plain_loop import plain_loss
from vaezoo.bench.throughput.precision import Precision
from vaezoo.core.errors import VaezooError

INPUT_SHAPE = (1, 28, 28)  # MNIST-shaped synthetic binary images: pixel values do not change the speed


@dataclass
class TrainParts:
    """What a step needs: the model (for FLOP counting), loss_fn(x, generator) -> loss, the optimizer,
    the batch, and the noise generator eager mode uses."""

    model: torch.nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]
    optimizer: torch.optim.Optimizer
    x: torch.Tensor
    generator: torch.Generator | None = None


def train_step(
    parts: TrainParts, precision: Precision, scaler, generator, zero_grad: bool = True, cache_enabled: bool = True
):
    """One step as vaezoo.training.loop takes it: loss, zero_grad, backward, optimizer step; returns the loss."""
    with precision.context(parts.x.device, cache_enabled):
        loss = parts.loss_fn(parts.x, generator)
    if zero_grad:
        parts.optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        parts.optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(parts.optimizer)
        scaler.update()
    return loss.detach()


def eager_step(parts: TrainParts, precision: Precision) -> Callable[[], torch.Tensor]:
    scaler = precision.scaler(parts.x.device)
    return lambda: train_step(parts, precision, scaler, parts.generator)


def compiled_step(parts: TrainParts, precision: Precision) -> Callable[[], torch.Tensor]:
    scaler = precision.scaler(parts.x.device)

    def step():
        return train_step(parts, precision, scaler, None)

    # dynamic=False: each batch size gets its own static graph, as a user compiling one job would.
    return torch.compile(step, dynamic=False)


def cudagraph_step(parts: TrainParts, precision: Precision) -> Callable[[], torch.Tensor]:
    """Capture forward, backward and Adam in one CUDA graph; a step is one replay."""
    device = parts.x.device
    if device.type != "cuda":
        raise VaezooError("mode 'cudagraph' needs a CUDA device")
    if precision.grad_scaler:
        raise VaezooError(
            f"precision '{precision.name}' uses a GradScaler, which reads back from the GPU and cannot be captured"
        )
    for group in parts.optimizer.param_groups:
        group["capturable"] = True  # Adam keeps its step count on the GPU, so replays advance it
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm up outside the graph: lazy inits, optimizer state
        for _ in range(3):
            train_step(parts, precision, None, None, cache_enabled=False)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    parts.optimizer.zero_grad(set_to_none=True)  # gradients are then allocated inside the graph's pool
    with torch.cuda.graph(graph):
        loss = train_step(parts, precision, None, None, zero_grad=False, cache_enabled=False)

    def step():
        graph.replay()
        return loss

    return step


MODES: dict[str, Callable[[TrainParts, Precision], Callable[[], torch.Tensor]]] = {
    "eager": eager_step,
    "compile": compiled_step,
    "cudagraph": cudagraph_step,
}


def synthetic_batch(
    batch: int, device: torch.device, seed: int = 0, shape: tuple[int, ...] = INPUT_SHAPE
) -> torch.Tensor:
    """Binary images with ~20% pixels on (speed does not depend on their content)."""
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((batch, *shape), 0.2), generator=g).to(device)


def train_config(variant: str, backbone: str, batch: int, seed: int = 0, shape: tuple[int, ...] = INPUT_SHAPE):
    """The resolved TrainConfig of one benchmark case (the variant's own objective defaults)."""
    from vaezoo.training.config import resolve_config

    return resolve_config({"model": {"name": variant, "backbone": backbone}, "batch_size": batch, "seed": seed}, shape)


def vaezoo_parts(cfg, x: torch.Tensor) -> TrainParts:
    """Model, Objective and Adam exactly as vaezoo.training.loop builds them."""
    from vaezoo.data import Dataset
    from vaezoo.training.loop import build

    ds = Dataset("synthetic", x.detach().cpu(), x[:1].detach().cpu())
    model, objective, optimizer = build(cfg, ds, x.device)
    model.train()
    gen = torch.Generator(device=x.device).manual_seed(cfg.seed)
    return TrainParts(model, lambda xb, g: objective(model, xb, g).loss, optimizer, x, gen)


def plain_parts(cfg, reference: TrainParts, fused: bool | None = None) -> TrainParts:
    """The hand-written loss on a copy of the reference model (same weights) with its own Adam: torch's
    default implementation unless ``fused`` says otherwise."""
    model = copy.deepcopy(reference.model)
    loss = plain_loss(model, cfg.objective)
    o = cfg.optim
    optimizer = torch.optim.Adam(model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=fused)
    gen = torch.Generator(device=reference.x.device).manual_seed(cfg.seed)
    return TrainParts(model, loss, optimizer, reference.x, gen)
