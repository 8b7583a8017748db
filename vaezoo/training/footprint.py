"""The memory a step needs, estimated from the config before any work, and what the machine can hold.

A model's sizes come from building it and running one datapoint through it: on torch's ``meta`` device, which
allocates nothing (so a latent size of 10^9 is counted, not allocated), or, for a model of at most 16M
parameters, on the CPU (the meta device's first use costs about a second at every start):
  P  parameters;
  E  encoder elements per datapoint (the sum of every encoder layer's output);
  R  elements per latent sample: every decoder layer's output, the likelihood's per-pixel term (D) and
     the latent vectors and per-unit densities (3 d).
The estimate, in bytes of float32 (4 each), for batch B, K samples per datapoint and `rows` evaluation rows:
  training step  4 (4 P + max(2 (B E + B K R), rows (E + R)))
      weights, gradients and Adam's two moments; autograd keeps each layer's output for the backward pass and
      makes its gradient there (2 copies); the periodic evaluation runs without autograd over `rows` samples.
  evaluation     4 (P + rows (E + R))
It is an upper bound of what the step allocates: a test measures a real first step (forward, backward, Adam)
with torch's profiler for each estimator and backbone at 0.4-0.7 of it. Data sets are not counted (the largest,
MNIST, is 0.2 GB).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from vaezoo.core.errors import VaezooError
from vaezoo.models import ModelConfig, build_model

FLOAT_BYTES = 4
STATE_COPIES = 4  # weights, gradients, Adam's first and second moments
AUTOGRAD_COPIES = 2  # a layer's output kept for backward, and its gradient made there
GIB = 2**30
REAL_COUNT_PARAMS = 2**24  # up to 16M parameters (64 MiB) a model is built for real to be counted


@dataclass(frozen=True)
class Footprint:
    """Element counts of a model: ``params`` (P), ``per_datapoint`` (E) and ``per_sample`` (R) of the module docstring."""

    params: int
    per_datapoint: int
    per_sample: int

    @classmethod
    def of(cls, cfg: ModelConfig) -> Footprint:
        with torch.device("meta"):
            model = build_model(cfg)
        device = "meta"
        if sum(p.numel() for p in model.parameters()) <= REAL_COUNT_PARAMS:
            # the first forward pass on the meta device loads torch's meta kernels (~1 s at every start); a model
            # this small is counted on the CPU with one real datapoint in a few milliseconds instead
            model, device = build_model(cfg), "cpu"
        counts = {"encoder": 0, "decoder": 0}
        hooks = [
            module.register_forward_hook(lambda _m, _i, out, part=part: counts.__setitem__(part, counts[part] + out.numel()))
            for part in counts
            for module in getattr(model, part).modules()
            if not any(module.children())  # leaves only: a container's output is its last layer's
        ]
        with torch.no_grad():
            model.encoder(torch.zeros(1, *cfg.input_shape, device=device))
            model.decoder(torch.zeros(1, cfg.latent_dim, device=device))
        for hook in hooks:
            hook.remove()
        per_sample = counts["decoder"] + math.prod(cfg.input_shape) + 3 * cfg.latent_dim
        return cls(sum(p.numel() for p in model.parameters()), counts["encoder"], per_sample)

    def training_bytes(self, batch: int, k: int, eval_rows: int) -> int:
        step = AUTOGRAD_COPIES * batch * (self.per_datapoint + k * self.per_sample)
        return FLOAT_BYTES * (STATE_COPIES * self.params + max(step, self.eval_activations(eval_rows)))

    def eval_bytes(self, rows: int) -> int:
        return FLOAT_BYTES * (self.params + self.eval_activations(rows))

    def eval_activations(self, rows: int) -> int:
        return rows * (self.per_datapoint + self.per_sample)


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_room() -> int | None:
    """What a container's memory limit (cgroup v2) leaves; None without one."""
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        used = int(open("/sys/fs/cgroup/memory.current").read())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def available_bytes(device: torch.device) -> tuple[int, str] | None:
    """(bytes, where the figure comes from) that a step may use on ``device``; None where nothing says."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free, f"the free memory of {torch.cuda.get_device_name(device)}"
    figures = [(b, w) for b, w in ((_meminfo_available(), "this machine's available RAM"),
                                   (_cgroup_room(), "this container's memory limit")) if b is not None]
    return min(figures) if figures else None


def check_fits(need: int, device: torch.device, what: str, remedy: str) -> None:
    """Refuse, before any work, a step whose estimate exceeds what ``device`` can hold."""
    room = available_bytes(device)
    if room is not None and need > room[0]:
        raise VaezooError(
            f"{what} needs about {need / GIB:.3g} GiB (estimated, see vaezoo.training.footprint), more than the "
            f"{room[0] / GIB:.3g} GiB of {room[1]}; {remedy}"
        )
