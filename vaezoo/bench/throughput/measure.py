"""The benchmark: the grid of cases, each measured as windows interleaved between the contenders, one row each."""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields

import torch

from vaezoo.bench import timing
from vaezoo.bench.flops import StepFlops, training_step_flops
from vaezoo.bench.results import slug
from vaezoo.bench.throughput.precision import Precision, get_precision
from vaezoo.bench.throughput.step import MODES, plain_parts, synthetic_batch, train_config, vaezoo_parts
from vaezoo.core.errors import VaezooError
from vaezoo.tracking.provenance import resolve_device


@dataclass
class ThroughputConfig:
    """The grid to measure and how long to measure each point."""

    models: tuple[str, ...] = ("vae",)
    backbones: tuple[str, ...] = ("mlp", "conv")
    batch_sizes: tuple[int, ...] = (128, 512)
    devices: tuple[str, ...] = ("cpu",)
    modes: tuple[str, ...] = ("eager", "compile")
    precisions: tuple[str, ...] = ("fp32",)
    windows: int = 5
    window_s: float = 0.3
    warmup_s: float = 0.3
    plain: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        from vaezoo.models import ModelConfig, model_spec

        for name in self.models:
            model_spec(name)
        for b in self.backbones:
            ModelConfig(backbone=b)  # the model config knows the backbones
        for bs in self.batch_sizes:
            if bs <= 0:
                raise VaezooError(f"batch size must be > 0, got {bs}")
        for m in self.modes:
            if m not in MODES:
                raise VaezooError(f"unknown mode '{m}'; choose from {', '.join(MODES)}")
        timing.check_windows(self.windows, self.window_s, self.warmup_s)
        if not all((self.models, self.backbones, self.batch_sizes, self.devices, self.modes, self.precisions)):
            raise VaezooError(
                "every list (models, backbones, batch sizes, devices, modes, precisions) needs at least one entry"
            )
        for dev in self.devices:
            device = resolve_device(dev)
            for p in self.precisions:
                get_precision(p).check(device)
            if "cudagraph" in self.modes and device.type != "cuda":
                raise VaezooError(f"mode 'cudagraph' needs a CUDA device, not '{dev}'")
        scaled = [p for p in self.precisions if get_precision(p).grad_scaler]
        if "cudagraph" in self.modes and scaled:
            raise VaezooError(
                f"precision '{scaled[0]}' uses a GradScaler, which cannot run inside a CUDA graph (mode 'cudagraph')"
            )


@dataclass
class Row:
    """One line of the results table (times are medians over the windows; ratios from interleaved windows)."""

    variant: str
    backbone: str
    batch: int
    device: str
    mode: str
    precision: str
    samples_per_s: float = float("nan")
    samples_per_s_low: float = float("nan")
    samples_per_s_high: float = float("nan")
    rel_spread: float = float("nan")
    first_step_s: float = float("nan")
    plain_samples_per_s: float = float("nan")
    plain_first_step_s: float = float("nan")
    ratio_to_plain: float = float("nan")
    speedup_vs_eager: float = float("nan")
    train_mflop_per_sample: float = float("nan")
    achieved_gflops: float = float("nan")
    peak_gflops: float = float("nan")
    mfu: float = float("nan")
    windows: int = 0
    steps_per_window: int = 0
    device_name: str = ""
    threads: int = 0
    torch: str = ""
    git_sha: str = ""
    error: str = ""

    @property
    def label(self) -> str:
        return f"{self.variant}-{self.backbone}-b{self.batch}-{self.device}-{self.mode}-{self.precision}"


ROW_FIELDS = [f.name for f in fields(Row)]


@dataclass
class Environment:
    """Where the numbers come from, and the file-name stem timm-style (torch version, device)."""

    device: torch.device
    device_name: str
    threads: int
    torch: str = field(default_factory=lambda: torch.__version__)
    git_sha: str = ""

    @property
    def stem(self) -> str:
        ver = "pt" + re.sub(r"[^0-9]", "", self.torch.split("+")[0])
        if self.device.type == "cuda":
            acc = "cu" + re.sub(r"[^0-9]", "", torch.version.cuda or "")
            return f"{ver}-{acc}-{slug(self.device_name)}"
        return f"{ver}-cpu-{slug(self.device_name)}-t{self.threads}"

    def csv_name(self, precision: str) -> str:
        return f"train-{precision}-{self.stem}.csv"

    @property
    def png_name(self) -> str:
        return f"train-{self.stem}.png"


def environment(device: torch.device) -> Environment:
    from vaezoo.tracking.provenance import device_name, git_label

    return Environment(device, device_name(device), torch.get_num_threads(), git_sha=git_label())


def _cases(cfg: ThroughputConfig) -> Iterator[tuple[str, str, str, int, str]]:
    for dev in cfg.devices:
        for prec in cfg.precisions:
            for variant in cfg.models:
                for backbone in cfg.backbones:
                    for batch in cfg.batch_sizes:
                        yield dev, prec, variant, backbone, batch


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def step_flops(tcfg, x: torch.Tensor) -> StepFlops:
    """FLOPs of one vaezoo training step on ``x``, counted on a throw-away copy of the case's model."""
    parts = vaezoo_parts(tcfg, x)
    return training_step_flops(parts.model, lambda xb: parts.loss_fn(xb, parts.generator), x)


def measure_group(
    cfg: ThroughputConfig, env: Environment, prec: Precision, variant: str, backbone: str, batch: int, peak: float
) -> list[Row]:
    """All modes of one (variant, backbone, batch, device, precision), vaezoo and plain, interleaved."""
    device = env.device
    tcfg = train_config(variant, backbone, batch, cfg.seed)
    x = synthetic_batch(batch, device, cfg.seed)
    base = dict(
        variant=variant,
        backbone=backbone,
        batch=batch,
        device=device.type,
        precision=prec.name,
        device_name=env.device_name,
        threads=env.threads,
        torch=env.torch,
        git_sha=env.git_sha,
        windows=cfg.windows,
    )
    rows = {mode: Row(mode=mode, **base) for mode in cfg.modes}
    flops = step_flops(tcfg, x)
    if "compile" in cfg.modes:
        torch._dynamo.reset()  # fresh compile caches: each group's compile time is its own
    steps: dict[tuple[str, str], Callable[[], torch.Tensor]] = {}
    prepared: dict[tuple[str, str], timing.Windows] = {}
    for mode in cfg.modes:
        for who in ("vaezoo", "plain") if cfg.plain else ("vaezoo",):
            key = (mode, who)
            try:
                parts = vaezoo_parts(tcfg, x)
                if who == "plain":
                    parts = plain_parts(tcfg, parts)
                step = MODES[mode](parts, prec)
                prepared[key] = timing.prepare(step, device, cfg.window_s, cfg.warmup_s)
                if mode in ISOLATED_MODES:  # all its windows now, then let it go before the next contender
                    timing.run_windows({key: step}, {key: prepared[key]}, device, cfg.windows)
                else:
                    steps[key] = step
            except Exception as exc:  # one failing contender (e.g. a compiler error) must not stop the rest
                prepared.pop(key, None)
                rows[mode].error += f"{who}: {_error_text(exc)}; "
            finally:
                parts = step = None
                if mode in ISOLATED_MODES:
                    _release(device)
    if steps:
        timing.run_windows(steps, prepared, device, cfg.windows)
    for mode, row in rows.items():
        _fill_row(row, prepared, mode, batch, flops, peak)
    return list(rows.values())


def _fill_row(row: Row, prepared: dict, mode: str, batch: int, flops: StepFlops, peak: float) -> None:
    """A mode's row from its measured windows: speeds with their spread, MFU, the paired ratios."""
    vz, pl = prepared.get((mode, "vaezoo")), prepared.get((mode, "plain"))
    if vz is not None:
        row.samples_per_s, row.samples_per_s_low, row.samples_per_s_high = batch * vz.median, batch * vz.low, batch * vz.high
        row.rel_spread, row.first_step_s, row.steps_per_window = vz.rel_spread, vz.first_call_s, vz.steps_per_window
        row.train_mflop_per_sample = flops.train_per_sample / 1e6
        row.achieved_gflops = flops.train_per_sample * row.samples_per_s / 1e9
        row.peak_gflops = peak / 1e9
        row.mfu = row.achieved_gflops / row.peak_gflops
        eager = prepared.get(("eager", "vaezoo"))
        if eager is not None and mode != "eager":
            row.speedup_vs_eager = timing.paired_ratio(vz, eager)
    if pl is not None:
        row.plain_samples_per_s, row.plain_first_step_s = batch * pl.median, pl.first_call_s
        if vz is not None:
            row.ratio_to_plain = timing.paired_ratio(vz, pl)
    row.error = row.error.strip("; ")


# Modes whose contenders are measured one after the other, never two alive at once (their ratio to the plain
# loop then comes from sequential windows, not interleaved ones). Two whole-step CUDA graphs (with Adam's step)
# alive in one process crashed on replay with an illegal memory access on an H200 at batch >= 8192
# (torch 2.11), with separate or shared pools, any Adam implementation and separate generators; one graph
# alone, or two without the optimizer step, ran.
ISOLATED_MODES = frozenset({"cudagraph"})


def _release(device: torch.device) -> None:
    """Free what the last contender held (a CUDA graph keeps its memory pool until it is collected)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def run_throughput(
    cfg: ThroughputConfig,
    on_row: Callable[[Row], None] | None = None,
    envs: dict[str, Environment] | None = None,
) -> list[Row]:
    """Measure the whole grid; ``on_row`` sees each row as soon as it is done. ``envs`` (by device name as in
    ``cfg.devices``, one for each) are the environments already looked up; when None they are looked up here."""
    rows: list[Row] = []
    peaks: dict[tuple[str, str], float] = {}
    if envs is None:
        envs = {d: environment(resolve_device(d)) for d in cfg.devices}
    for dev, prec_name, variant, backbone, batch in _cases(cfg):
        env = envs[dev]
        device = env.device
        prec = get_precision(prec_name)
        if (dev, prec_name) not in peaks:
            peaks[(dev, prec_name)] = timing.matmul_peak(
                device, prec.matmul_dtype, windows=cfg.windows, window_s=cfg.window_s
            )
        try:
            group = measure_group(cfg, env, prec, variant, backbone, batch, peaks[(dev, prec_name)])
        except Exception as exc:  # e.g. out of memory at a large batch: record it, go on with the grid
            group = [
                Row(variant, backbone, batch, device.type, m, prec_name, error=_error_text(exc)) for m in cfg.modes
            ]
        finally:
            _release(device)
        for row in group:
            rows.append(row)
            if on_row:
                on_row(row)
    return rows
