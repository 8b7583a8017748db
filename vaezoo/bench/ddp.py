"""Training throughput under DistributedDataParallel, and its scaling efficiency versus one process.

    torchrun --nproc-per-node 2 -m vaezoo.bench.ddp --model vae --backbone mlp --batch-size 128

Backend: gloo on CPU, NCCL on CUDA (one GPU per process). ``--batch-size`` is per process (weak
scaling: N processes train on N x batch per step). In the same launch, rank 0 first measures the plain
single-process vaezoo step alone (the other ranks wait), then every rank runs the DDP step; scaling
efficiency = aggregate DDP samples/s / (N x single-process samples/s). Both use the same threads per
process (torchrun sets OMP_NUM_THREADS=1 for N > 1 unless you set it).

The DDP step is the one ``vaezoo train --ddp`` takes (``vaezoo.training.distributed.ddp_step``, on a replica
from ``replicate``, in a process group from ``start``): what is timed here is what data-parallel training runs.
DDP averages the ranks' gradients; since each rank's loss is a batch mean over equal batches, and every rank
draws the noise of the concatenated batch from one seeded stream and keeps its rows, one DDP step equals one
single-process step on the concatenated batch (tests/test_ddp.py checks it).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import torch
import torch.distributed as dist

from vaezoo.bench import timing
from vaezoo.bench.results import write_csv
from vaezoo.bench.throughput import (
    environment,
    get_precision,
    synthetic_batch,
    train_config,
    train_step,
    vaezoo_parts,
)
from vaezoo.cli.run import run_click
from vaezoo.core.io import atomic_write_text, make_dir
from vaezoo.training import distributed


def init_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device): the process group of ``vaezoo train --ddp`` from torchrun's environment; a
    lone process becomes a world of one."""
    from vaezoo.tracking.provenance import resolve_device

    device = resolve_device(device_name)
    if distributed.launched():
        world = distributed.World.from_env()
        return world.rank, world.size, distributed.start(world, device)
    store = os.path.join(tempfile.mkdtemp(prefix="vaezoo-ddp-"), "store")
    return 0, 1, distributed.start(distributed.World(0, 1), device, init_method=f"file://{store}")


@dataclass
class DDPParts:
    """One rank's replica (vaezoo's model and Objective behind DDP), its Adam, its rows ``x`` and the generator
    of the global batch's noise."""

    replica: distributed.Replica
    optimizer: torch.optim.Optimizer
    x: torch.Tensor
    generator: torch.Generator

    @property
    def model(self) -> torch.nn.Module:
        return self.replica.ddp.module.model

    def step(self, precision=None, scaler=None) -> torch.Tensor:
        """``ddp_step``, the step of ``vaezoo train --ddp``, in ``precision``; returns this rank's loss."""
        autocast = precision.context(self.x.device) if precision is not None else None
        return distributed.ddp_step(self.replica, self.optimizer, self.x, self.generator, autocast, scaler).loss.detach()


def ddp_parts(tcfg, x: torch.Tensor, rank: int, world: int) -> DDPParts:
    """vaezoo's model, Objective and Adam (as vaezoo.training.loop builds them) replicated for data-parallel
    steps (vaezoo.training.distributed), in the dtype of ``x``, which holds rank ``rank``'s rows; every rank's
    generator is seeded ``seed``, as in training (each keeps its rows of the global batch's noise)."""
    from vaezoo.data import Dataset
    from vaezoo.training.loop import build

    model, objective, optimizer = build(tcfg, Dataset("synthetic", x.cpu(), x[:1].cpu()), x.device)
    model.to(x.dtype).train()  # in place: the optimizer keeps the same parameter objects
    replica = distributed.replicate(model, objective, distributed.World(rank, world))
    gen = torch.Generator(device=x.device).manual_seed(tcfg.seed)
    return DDPParts(replica, optimizer, x, gen)


def _agree(value):
    """Rank 0's value, on every rank (so all ranks take the same number of steps: each step all-reduces)."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@dataclass
class DDPConfig:
    """One DDP benchmark point; ``batch_size`` is per process."""

    model: str = "vae"
    backbone: str = "mlp"
    batch_size: int = 128
    precision: str = "fp32"
    device: str = "cpu"
    windows: int = 5
    window_s: float = 0.5
    warmup_s: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        timing.check_windows(self.windows, self.window_s, self.warmup_s)
        get_precision(self.precision)
        # unknown model or backbone, batch size <= 0: an error now, before any process group
        train_config(self.model, self.backbone, self.batch_size, self.seed)


def run_ddp(cfg: DDPConfig, rank: int, world: int, device: torch.device) -> dict | None:
    """The benchmark on every rank of an initialised process group; rank 0 returns the summary (others None)."""
    prec = get_precision(cfg.precision)
    prec.check(device)
    tcfg = train_config(cfg.model, cfg.backbone, cfg.batch_size, cfg.seed)
    x = synthetic_batch(cfg.batch_size, device, cfg.seed * 1000 + rank)
    single = None
    if rank == 0:  # one process alone, same threads and per-process batch; the others wait
        parts = vaezoo_parts(tcfg, x)
        scaler = prec.scaler(device)
        res = timing.measure(
            {"single": lambda: train_step(parts, prec, scaler, parts.generator)},
            device,
            cfg.windows,
            cfg.window_s,
            cfg.warmup_s,
        )["single"]
        single = cfg.batch_size * res.median
        del parts
    dist.barrier()
    parts = ddp_parts(tcfg, x, rank, world)
    scaler = prec.scaler(device)

    def step():
        return parts.step(prec, scaler)

    # warm-up and window size steered by rank 0's times: every rank takes the same steps (each all-reduces)
    sized = timing.prepare(step, device, cfg.window_s, cfg.warmup_s, agree=_agree)
    first, per_window = sized.first_call_s, sized.steps_per_window
    times = [timing.timed(step, device, per_window) for _ in range(cfg.windows)]
    all_times = [None] * world
    dist.all_gather_object(all_times, times)
    if rank != 0:
        return None
    # a window ends when its slowest rank ends
    rates = [world * cfg.batch_size * per_window / max(t[w] for t in all_times) for w in range(cfg.windows)]
    agg = statistics.median(rates)
    env = environment(device)
    return {
        **asdict(cfg),
        "world_size": world,
        "backend": dist.get_backend(),
        "threads_per_process": torch.get_num_threads(),
        "single_samples_per_s": single,
        "ddp_samples_per_s": agg,
        "ddp_samples_per_s_low": min(rates),
        "ddp_samples_per_s_high": max(rates),
        "per_process_samples_per_s": agg / world,
        "scaling_efficiency": agg / (world * single),
        "ddp_first_step_s": first,
        "steps_per_window": per_window,
        "device_name": env.device_name,
        "torch": env.torch,
        "git_sha": env.git_sha,
        "csv_stem": env.stem,
    }


DDP_COLUMNS = [
    "model",
    "backbone",
    "batch_size",
    "precision",
    "world_size",
    "backend",
    "threads_per_process",
    "single_samples_per_s",
    "ddp_samples_per_s",
    "ddp_samples_per_s_low",
    "ddp_samples_per_s_high",
    "per_process_samples_per_s",
    "scaling_efficiency",
    "ddp_first_step_s",
    "windows",
    "steps_per_window",
    "device_name",
    "torch",
    "git_sha",
]


@click.command("ddp")
@click.option("--model", default="vae", show_default=True)
@click.option("--backbone", default="mlp", show_default=True)
@click.option("--batch-size", type=int, default=128, show_default=True, help="Per process.")
@click.option("--precision", default="fp32", show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu (gloo) or cuda (NCCL, one GPU per process).")
@click.option("--windows", type=int, default=5, show_default=True)
@click.option("--window-s", type=float, default=0.5, show_default=True)
@click.option("--warmup-s", type=float, default=0.5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="JSON summary here (rank 0).")
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Merge a line into ddp-<precision>-<env>.csv here.",
)
def ddp_command(out, out_dir, **options) -> None:
    """DDP training throughput and scaling efficiency versus one process (launch with torchrun)."""
    cfg = DDPConfig(**options)
    for folder in ([Path(out).parent] if out else []) + ([out_dir] if out_dir else []):
        make_dir(folder)  # a folder that cannot be made: an error now, not after the measurement
    rank, world, device = init_distributed(cfg.device)
    try:
        summary = run_ddp(cfg, rank, world, device)
        if summary is not None:
            _report(summary, out, out_dir)
        dist.barrier()  # no rank leaves before rank 0 has written its results
    finally:
        if world == 1:
            dist.destroy_process_group()
        # With several ranks the group is left up and __main__ ends with os._exit: gloo's teardown at
        # interpreter exit intermittently aborted a rank ("terminate called without an active exception",
        # about one CI run in five) after every result had been written.


def _report(summary: dict, out: str | None, out_dir: str | None) -> None:
    click.echo(
        f"DDP x{summary['world_size']} ({summary['backend']}, {summary['threads_per_process']} threads/process, "
        f"batch {summary['batch_size']}/process): {summary['ddp_samples_per_s']:,.0f} samples/s; one process "
        f"{summary['single_samples_per_s']:,.0f}; scaling efficiency {summary['scaling_efficiency']:.3f}"
    )
    if out:
        atomic_write_text(out, json.dumps(summary, indent=2) + "\n")
    if out_dir:
        path = Path(out_dir) / f"ddp-{summary['precision']}-{summary['csv_stem']}.csv"
        write_csv(path, [summary], DDP_COLUMNS, ("model", "backbone", "batch_size", "world_size", "threads_per_process"))
        click.echo(f"written: {path}")


def main(argv: list[str] | None = None) -> int:
    return run_click(ddp_command, argv)


if __name__ == "__main__":
    code = main()
    if dist.is_initialized():  # several ranks: skip the C++ teardown (see ddp_command); outputs are complete
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
