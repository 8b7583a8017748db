"""Data-parallel training: one process per rank (launched by torchrun), DistributedDataParallel, rank 0 writes.

    torchrun --nproc-per-node 2 -m vaezoo train --ddp --batch-size 128 ...

- ``--batch-size`` is the global batch B. Every rank builds the same seeded global batch of step t (data order
  and binarisation are pure functions of (seed, t)) and keeps its rows [r B/W, (r+1) B/W). The latent noise is
  drawn for the whole global batch from the same seeded stream and each rank keeps its rows
  (``Objective.shard``), so a datapoint gets the same noise whatever the number of ranks. Free bits floor each
  unit's mean KL over the global batch (averaged over ranks), as one process does.
- Each rank's loss is the mean over its rows; DDP averages the gradients over ranks during backward, which is
  the gradient of the mean over the global batch: W ranks x B/W train as one process x B, up to float rounding.
  The estimator's state (the score estimator's moving-average baseline) is averaged over ranks after each step,
  which is exactly the single-process update, so every rank holds the same state.
- The logged per-step terms are averaged over ranks (the global batch's means); a NaN on any rank stops every
  rank at the same step.
- Rank 0 alone writes: the run folder, config.json, run.json, metrics.jsonl, checkpoints, final.json, sample
  grids and the MLflow run. The other ranks write nothing, anywhere.
- Resume: restart the whole torchrun job with ``--resume RUN``; every rank restores the same checkpoint (the
  weights, Adam's state, the estimator's state and the step), so a job killed mid-run and resumed ends with the
  weights of an uninterrupted job of the same world size, bit for bit.

Backend: gloo on CPU, NCCL on CUDA (one GPU per rank, ``cuda:LOCAL_RANK``). The throughput benchmark
(``vaezoo.bench.ddp``) times ``ddp_step``, the step this module gives the training loop.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from vaezoo.core.errors import VaezooError
from vaezoo.tracking.provenance import resolve_device

LAUNCH = ("RANK", "WORLD_SIZE")  # what torchrun (and any env:// launcher) sets in each process
T = TypeVar("T")


def launched() -> bool:
    """Whether this process was started as one rank of a job (torchrun's RANK and WORLD_SIZE are set)."""
    return all(name in os.environ for name in LAUNCH)


@dataclass(frozen=True)
class World:
    """This process's place in the job: its rank, the number of ranks, its rank on this machine."""

    rank: int
    size: int
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> World:
        """The world torchrun describes; an error, before anything is started, outside such a job."""
        if not launched():
            raise VaezooError(
                "--ddp needs the environment torchrun gives each process (RANK and WORLD_SIZE are not set): "
                "launch it as `torchrun --nproc-per-node N -m vaezoo train --ddp ...`"
            )
        try:
            rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            local = int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError:
            raise VaezooError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers, got {os.environ['RANK']!r}, "
                              f"{os.environ['WORLD_SIZE']!r}, {os.environ.get('LOCAL_RANK')!r}") from None
        if not 0 <= rank < size or local < 0:
            raise VaezooError(f"rank {rank} of a world of {size} (local rank {local}) is not a place in it")
        return cls(rank, size, local)

    @property
    def writes(self) -> bool:
        """Rank 0 alone writes the run's files and its MLflow run."""
        return self.rank == 0

    def check_batch(self, batch_size: int) -> None:
        """The global batch must split into equal rows per rank (each rank's loss is a mean over its rows,
        and DDP's average of those means is the global mean only for equal shares)."""
        if batch_size % self.size:
            raise VaezooError(
                f"the batch size {batch_size} is the global batch and must be divisible by the world size "
                f"{self.size} (each rank trains on batch/world rows)"
            )

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch: [r B/W, (r+1) B/W)."""
        n = x.shape[0] // self.size
        return x[self.rank * n : (self.rank + 1) * n]

    def average(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of ``values`` over ranks (a new tensor; every rank gets the same)."""
        total = values.clone()
        dist.all_reduce(total)
        return total / self.size

    def agree(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on every rank; if it failed anywhere, fail everywhere (before any rank writes), naming
        the rank where it failed when not every rank did. A rank that fails alone would otherwise leave the
        others waiting in their first all-reduce."""
        try:
            result, failure = fn(), None
        except Exception as exc:  # re-raised below on this rank, reported to the others
            result, failure, mine = None, f"{exc}", exc
        failures: list = [None] * self.size
        dist.all_gather_object(failures, failure)
        failed = [(r, text) for r, text in enumerate(failures) if text is not None]
        if not failed:
            return result
        if failure is not None:
            raise mine
        rank, text = failed[0]
        raise VaezooError(f"rank {rank} could not start: {text}")


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def start(world: World, device: torch.device, init_method: str | None = None) -> torch.device:
    """Join the job's process group (env:// by default, as torchrun sets it up); returns this rank's device
    (CUDA: ``cuda:LOCAL_RANK``, made the current device, so ``cuda`` means it from here on)."""
    bind = {}
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise VaezooError(f"local rank {world.local_rank} has no GPU ({torch.cuda.device_count()} visible)")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
        bind = {"device_id": device}  # NCCL: one GPU per rank, known up front
    where = {} if init_method is None else {"init_method": init_method, "rank": world.rank, "world_size": world.size}
    dist.init_process_group(backend_for(device), **where, **bind)
    return device


def stop(finished: bool = True) -> None:
    """Leave the process group: after a finished run, past a barrier, so no rank tears down while rank 0 still
    writes; after a failure, at once (the other ranks may never reach a barrier)."""
    if dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


class ObjectiveForward(nn.Module):
    """The objective as a module's forward: DDP synchronises gradients only for work done in forward()."""

    def __init__(self, model: nn.Module, objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        return self.objective(self.model, x, generator)


@dataclass
class Replica:
    """This rank's model and objective behind DistributedDataParallel."""

    world: World
    ddp: nn.Module

    @property
    def objective(self):
        return self.ddp.module.objective


def replicate(model: nn.Module, objective, world: World) -> Replica:
    """Wrap ``model`` and ``objective`` for data-parallel steps on this rank. DDP broadcasts rank 0's weights
    once here; the objective draws the global batch's noise and keeps this rank's rows."""
    from torch.nn.parallel import DistributedDataParallel

    objective.shard = (world.rank, world.size)
    if objective.estimator is not None:  # free bits floor the global batch's mean KL per unit, not this rank's
        objective.estimator.batch_mean = lambda rows: world.average(rows.mean(0))
    device = next(model.parameters()).device
    ddp = DistributedDataParallel(ObjectiveForward(model, objective), device_ids=[device.index] if device.type == "cuda" else None)
    return Replica(world, ddp)


def ddp_step(replica: Replica, optimizer: torch.optim.Optimizer, x: torch.Tensor, generator: torch.Generator | None,
             autocast: contextlib.AbstractContextManager | None = None, scaler=None):
    """One data-parallel training step on this rank's rows ``x``: the objective through DDP, zero_grad, backward
    (DDP all-reduces the gradients and averages them over ranks as they are ready), the optimizer step, then the
    estimator's state averaged over ranks. Returns the objective's output (this rank's means). The training loop
    and the DDP throughput benchmark both take this step; ``autocast``/``scaler``: the benchmark's precision."""
    with autocast if autocast is not None else contextlib.nullcontext():
        out = replica.ddp(x, generator)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        out.loss.backward()
        optimizer.step()
    else:
        scaler.scale(out.loss).backward()
        scaler.step(optimizer)
        scaler.update()
    _average_state(replica, x.device)
    return out


def _average_state(replica: Replica, device: torch.device) -> None:
    """Average the estimator's float state over ranks. Each rank updated it from its own rows; its updates are
    linear in the batch mean (the score baseline's moving average), so the average is the global batch's update."""
    state = replica.objective.state_dict()
    keys = [k for k, v in state.items() if isinstance(v, float)]
    if not keys:
        return
    mean = replica.world.average(torch.tensor([state[k] for k in keys], dtype=torch.float64, device=device))
    replica.objective.load_state_dict({**state, **dict(zip(keys, mean.tolist()))})


def tags(world: World | None, device: torch.device) -> dict:
    """Run tags that say how a run was trained (none for one process)."""
    if world is None:
        return {}
    return {"ddp.world_size": world.size, "ddp.backend": backend_for(device)}


@contextlib.contextmanager
def job(batch_size: int, device_name: str, enabled: bool = True) -> Iterator[World | None]:
    """This process as a rank of a torchrun job, for the block: the environment and the batch checked before
    anything is started or written, the process group joined, and left at the end. Not ``enabled``: None (one
    process, no group)."""
    if not enabled:
        yield None
        return
    world = World.from_env()
    world.check_batch(batch_size)
    start(world, resolve_device(device_name))  # an unknown device: an error before the group
    try:
        yield world
    except BaseException:
        stop(finished=False)
        raise
    stop()


__all__ = ["World", "Replica", "ddp_step", "job", "launched", "replicate", "start", "stop"]
