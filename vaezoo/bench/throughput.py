"""``vaezoo bench throughput``: training samples/s of vaezoo's own step beside a plain PyTorch loop.

For each variant, backbone, batch size, device, precision and mode, two contenders train the same
model from the same weights on the same batch, interleaved window by window (vaezoo.bench.timing):

- ``vaezoo``: the library path of vaezoo/train.py: ``build()`` makes model, Objective and Adam; a step is
  ``objective(model, x, generator)``, ``zero_grad``, ``loss.backward()``, ``optimizer.step()``.
- ``plain``: the loop a user would write: the hand-written loss of vaezoo.bench.plain_loop and
  ``torch.optim.Adam`` with torch's defaults (multi-tensor, not fused).

Both run the same step wrapper (autocast, grad scaler, compile or CUDA graph), so the ratio vaezoo / plain
is vaezoo's default training step against that loop: its objectives' cost and its fused Adam
(``optim.fused``, on by default). With ``optim.fused=false`` the two do the same work bit for bit (tested),
and the ratio is the objectives' cost alone. Not measured in either: data loading and the per-step
logging of train.py. Every ratio (to the plain loop, compiled vs eager) comes from windows
interleaved in one process run; absolute samples/s depend on the machine and its load.

Modes: ``eager``; ``compile`` (``torch.compile`` of the whole step, optimizer included, noise from the
global generator since a torch.Generator argument breaks the graph); ``cudagraph`` (CUDA only: forward,
backward and Adam with ``capturable=True`` captured in one CUDA graph and replayed).
Precisions: ``fp32``; ``bf16`` autocast (CPU and CUDA); ``fp16`` autocast with a GradScaler (CUDA only).

FLOPs per step are counted from the layers (vaezoo.bench.flops); MFU is the achieved FLOP/s over the
device's matmul peak for that precision, measured in the same run (vaezoo.bench.timing.matmul_peak).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import gc
import io
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import click
import torch

from vaezoo.bench import timing
from vaezoo.bench.flops import StepFlops, training_step_flops
from vaezoo.bench.plain_loop import plain_loss
from vaezoo.errors import VaezooError
from vaezoo.io import atomic_write, atomic_write_text, make_dir
from vaezoo.provenance import resolve_device

INPUT_SHAPE = (1, 28, 28)  # MNIST-shaped synthetic binary images: pixel values do not change the speed


# ---------------------------------------------------------------- precisions


def _cpu_bf16() -> str | None:
    # Without oneDNN bf16 kernels autocast falls back to slow reference code: refuse rather than mislead.
    return (
        None
        if torch.ops.mkldnn._is_mkldnn_bf16_supported()
        else "oneDNN has no bf16 kernels for this CPU (it needs AVX-512)"
    )


def _cuda_bf16() -> str | None:
    return None if torch.cuda.is_bf16_supported() else "this GPU has no bf16 support"


@dataclass(frozen=True)
class Precision:
    """A training precision: the autocast dtype (None: plain fp32), whether a GradScaler is needed, and
    per device type a check that returns why it cannot run there (None: it can)."""

    name: str
    autocast: torch.dtype | None
    grad_scaler: bool
    support: dict[str, Callable[[], str | None]]

    @property
    def matmul_dtype(self) -> torch.dtype:
        return self.autocast or torch.float32

    def check(self, device: torch.device) -> None:
        if device.type not in self.support:
            raise VaezooError(
                f"precision '{self.name}' runs on {' and '.join(self.support)} only, not on {device.type}"
            )
        reason = self.support[device.type]()
        if reason:
            raise VaezooError(f"precision '{self.name}' is not supported on {device.type}: {reason}")

    def context(self, device: torch.device, cache_enabled: bool = True):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast, cache_enabled=cache_enabled)

    def scaler(self, device: torch.device):
        return torch.amp.GradScaler(device.type) if self.grad_scaler else None


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", None, False, {"cpu": lambda: None, "cuda": lambda: None}),
        Precision("bf16", torch.bfloat16, False, {"cpu": _cpu_bf16, "cuda": _cuda_bf16}),
        Precision("fp16", torch.float16, True, {"cuda": lambda: None}),
    )
}


def get_precision(name: str) -> Precision:
    if name not in PRECISIONS:
        raise VaezooError(f"unknown precision '{name}'; choose from {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


# ---------------------------------------------------------------- one training step


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
    """One step as vaezoo/train.py takes it: loss, zero_grad, backward, optimizer step; returns the loss."""
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


# ---------------------------------------------------------------- the two contenders


def synthetic_batch(
    batch: int, device: torch.device, seed: int = 0, shape: tuple[int, ...] = INPUT_SHAPE
) -> torch.Tensor:
    """Binary images with ~20% pixels on (speed does not depend on their content)."""
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((batch, *shape), 0.2), generator=g).to(device)


def train_config(variant: str, backbone: str, batch: int, seed: int = 0, shape: tuple[int, ...] = INPUT_SHAPE):
    """The resolved TrainConfig of one benchmark case (the variant's own objective defaults)."""
    from vaezoo.runconfig import resolve_config

    return resolve_config({"model": {"name": variant, "backbone": backbone}, "batch_size": batch, "seed": seed}, shape)


def vaezoo_parts(cfg, x: torch.Tensor) -> TrainParts:
    """Model, Objective and Adam exactly as vaezoo/train.py builds them."""
    from vaezoo.data import Dataset
    from vaezoo.train import build

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


# ---------------------------------------------------------------- the benchmark


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
            return f"{ver}-{acc}-{_slug(self.device_name)}"
        return f"{ver}-cpu-{_slug(self.device_name)}-t{self.threads}"

    def csv_name(self, precision: str) -> str:
        return f"train-{precision}-{self.stem}.csv"

    @property
    def png_name(self) -> str:
        return f"train-{self.stem}.png"


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm|c)\)", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def environment(device: torch.device) -> Environment:
    from vaezoo.provenance import device_name, git_label

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
        vz, pl = prepared.get((mode, "vaezoo")), prepared.get((mode, "plain"))
        if vz is not None:
            row.samples_per_s, row.samples_per_s_low, row.samples_per_s_high = (
                batch * vz.median,
                batch * vz.low,
                batch * vz.high,
            )
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
    return list(rows.values())


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


# ---------------------------------------------------------------- results: CSV, PNG, MLflow


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text()))) if path.is_file() else []


def merge_csv(path: Path, records: list[dict], key: tuple[str, ...], columns: list[str]) -> list[dict]:
    """Write ``records`` into the CSV at ``path``, replacing stored lines with the same ``key``; atomic."""

    def k(rec: dict) -> tuple:
        return tuple(str(rec[f]) for f in key)

    merged = {k(r): r for r in read_csv(path)}
    merged.update({k(r): {c: (f"{v:.6g}" if isinstance(v, float) else v) for c, v in r.items()} for r in records})
    ordered = sorted(
        merged.values(), key=lambda r: tuple(int(v) if str(v).isdigit() else str(v) for v in (r[f] for f in key))
    )
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(ordered)
    atomic_write_text(path, buf.getvalue())
    return ordered


def _row_from(rec: dict[str, str]) -> Row:
    types = {f.name: f.type for f in fields(Row)}
    vals = {}
    for k, v in rec.items():
        if k in types and v is not None:
            tp = types[k]
            vals[k] = int(float(v)) if tp == "int" else float(v) if tp == "float" else v
    return Row(**vals)


def read_rows(path: Path) -> list[Row]:
    """Rows of a results CSV written by ``write_rows`` (unknown columns ignored, missing ones default)."""
    return [_row_from(r) for r in read_csv(path)]


def write_rows(path: Path, rows: list[Row]) -> None:
    """Merge ``rows`` into the CSV at ``path`` (a row replaces the stored one with the same key)."""
    key = ("device", "precision", "variant", "backbone", "mode", "batch")
    merge_csv(path, [asdict(r) for r in rows], key, ROW_FIELDS)


def plot(path: Path, rows: list[Row], title: str) -> Path:
    """PNG of samples/s against batch size: one line per (variant, backbone, mode, precision); plain dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[tuple, list[Row]] = {}
    for r in rows:
        if r.samples_per_s == r.samples_per_s:  # skip NaN (failed) rows
            lines.setdefault((r.variant, r.backbone, r.mode, r.precision), []).append(r)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for i, (key, pts) in enumerate(sorted(lines.items())):
        pts.sort(key=lambda r: r.batch)
        color = f"C{i % 10}"
        ax.plot([r.batch for r in pts], [r.samples_per_s for r in pts], "o-", color=color, label="-".join(key))
        plain = [r for r in pts if r.plain_samples_per_s == r.plain_samples_per_s]
        if plain:
            ax.plot([r.batch for r in plain], [r.plain_samples_per_s for r in plain], "x--", color=color, alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("training samples/s (median)")
    ax.set_title(f"{title}\nsolid: vaezoo step, dashed: plain PyTorch loop", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def save_results(out_dir: Path, rows: list[Row], envs: dict[str, Environment]) -> None:
    """Merge ``rows`` into the CSV of their (environment, precision), keeping what is there."""
    for env in envs.values():
        mine = [r for r in rows if r.device == env.device.type]
        for prec in sorted({r.precision for r in mine}):
            write_rows(out_dir / env.csv_name(prec), [r for r in mine if r.precision == prec])


def plot_results(out_dir: Path, envs: dict[str, Environment], precisions: tuple[str, ...]) -> list[Path]:
    """One PNG per environment, of all that its CSVs of ``precisions`` hold (earlier runs' rows included)."""
    written: list[Path] = []
    for env in envs.values():
        # dict.fromkeys: a precision named twice is read once; read_rows gives [] for a CSV not written
        rows = [r for p in dict.fromkeys(precisions) for r in read_rows(out_dir / env.csv_name(p))]
        if rows:
            title = f"vaezoo training throughput, {env.device_name}, torch {env.torch}"
            written.append(plot(out_dir / env.png_name, rows, title))
    return written


def track_results(
    cfg: ThroughputConfig, rows: list[Row], files: list[Path], track: bool, uri: str | None
) -> str | None:
    """One MLflow run: the config as params, provenance as tags, figures as metrics, files as artifacts."""
    from vaezoo import tracking
    from vaezoo.config import to_dict
    from vaezoo.provenance import provenance

    if not track:
        return None
    tracker = tracking.start(True, f"throughput-{time.strftime('%Y%m%d-%H%M%S')}", uri)
    tracker.log_params(tracking.flatten(to_dict(cfg)))
    tracker.set_tags({**provenance(resolve_device(cfg.devices[0]), cfg.seed), "benchmark": "throughput"})
    metrics = {}
    for r in rows:
        for name in (
            "samples_per_s",
            "plain_samples_per_s",
            "ratio_to_plain",
            "speedup_vs_eager",
            "mfu",
            "first_step_s",
        ):
            v = getattr(r, name)
            if v == v:
                metrics[f"{r.label}.{name}"] = v
    tracker.log_metrics(metrics, 0)
    for path in files:
        tracker.log_artifact(path, "throughput")
    tracker.end()
    return tracker.run_id


def format_row(r: Row) -> str:
    def f(v: float, spec: str) -> str:
        return format(v, spec) if v == v else "-"

    text = (
        f"{r.variant:>8s} {r.backbone:>5s} {r.batch:>6d} {r.device:>4s} {r.mode:>9s} {r.precision:>4s} "
        f"{f(r.samples_per_s, ',.0f'):>12s} ±{f(100 * r.rel_spread, '.0f'):>3s}% {f(r.plain_samples_per_s, ',.0f'):>12s} "
        f"{f(r.ratio_to_plain, '.3f'):>6s} {f(r.speedup_vs_eager, '.2f'):>6s} {f(r.mfu * 100, '.1f'):>5s}% "
        f"{f(r.first_step_s, '.1f'):>6s}"
    )
    return text + (f"  [{r.error}]" if r.error else "")


HEADER = (
    f"{'variant':>8s} {'bb':>5s} {'batch':>6s} {'dev':>4s} {'mode':>9s} {'prec':>4s} {'samples/s':>12s} {'spread':>5s} "
    f"{'plain/s':>12s} {'ratio':>6s} {'vs_eag':>6s} {'MFU':>6s} {'first':>6s}"
)


def _split(values: tuple[str, ...], what: str, default: tuple[str, ...]) -> list[str]:
    """A repeated and/or comma-separated option's items; ``default`` when the option was not given."""
    items = [v.strip() for item in values for v in item.split(",") if v.strip()]
    if values and not items:
        raise VaezooError(f"{what} was given no values")
    return items or list(default)


def _ints(values: tuple[str, ...], what: str, default: tuple[int, ...]) -> tuple[int, ...]:
    items = _split(values, what, tuple(map(str, default)))
    try:
        return tuple(int(v) for v in items)
    except ValueError:
        raise VaezooError(f"{what} must be integers, got {', '.join(values)}") from None


@click.command("throughput")
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Variants, comma-separated or repeated; 'all' = every registered one. [vae]",
)
@click.option("--backbone", "backbones", multiple=True, help="mlp, conv, linear. [mlp,conv]")
@click.option("--batch-size", "batch_sizes", multiple=True, help="Batch sizes, e.g. 32,128,512,4096. [128,512]")
@click.option("--device", "devices", multiple=True, help="cpu, cuda; 'auto' = cpu, and cuda when present. [cpu]")
@click.option("--mode", "modes", multiple=True, help="eager, compile, cudagraph (CUDA). [eager,compile]")
@click.option("--precision", "precisions", multiple=True, help="fp32, bf16, fp16 (CUDA, with GradScaler). [fp32]")
@click.option("--windows", type=int, default=5, show_default=True, help="Timed windows per contender.")
@click.option(
    "--window-s", type=float, default=0.3, show_default=True, help="Seconds per window (steps calibrated to fit)."
)
@click.option(
    "--warmup-s", type=float, default=0.3, show_default=True, help="Warm-up seconds after the first (compile) step."
)
@click.option("--threads", type=int, default=None, help="torch.set_num_threads for the CPU.")
@click.option("--no-plain", is_flag=True, help="Skip the plain-loop baseline.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False), default="benchmarks/results", show_default=True)
@click.option("--no-plot", is_flag=True)
@click.option("--no-track", is_flag=True, help="Do not log to MLflow.")
@click.option("--tracking-uri", default=None)
def throughput_command(
    models,
    backbones,
    batch_sizes,
    devices,
    modes,
    precisions,
    windows,
    window_s,
    warmup_s,
    threads,
    no_plain,
    seed,
    out_dir,
    no_plot,
    no_track,
    tracking_uri,
) -> None:
    """Training samples/s, ratio to a plain PyTorch loop, and MFU, per variant/backbone/batch/mode/precision."""
    from vaezoo.models import list_models

    if threads is not None:
        if threads < 1:
            raise VaezooError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    names = _split(models, "--model", ("vae",))
    if "all" in names:
        names = [s.name for s in list_models()]
    devs = _split(devices, "--device", ("cpu",))
    if "auto" in devs:
        devs = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    cfg = ThroughputConfig(
        models=tuple(names),
        backbones=tuple(_split(backbones, "--backbone", ("mlp", "conv"))),
        batch_sizes=_ints(batch_sizes, "--batch-size", (128, 512)),
        devices=tuple(devs),
        modes=tuple(_split(modes, "--mode", ("eager", "compile"))),
        precisions=tuple(_split(precisions, "--precision", ("fp32",))),
        windows=windows,
        window_s=window_s,
        warmup_s=warmup_s,
        plain=not no_plain,
        seed=seed,
    )
    out = make_dir(out_dir)
    envs = {d: environment(resolve_device(d)) for d in cfg.devices}
    for env in envs.values():
        click.echo(
            f"# {env.device_name}, torch {env.torch}, {env.threads} threads -> {out}/{env.csv_name('<precision>')}"
        )
    click.echo(HEADER)

    def on_row(row: Row) -> None:
        click.echo(format_row(row))
        save_results(out, [row], envs)  # a killed run keeps what it measured

    rows = run_throughput(cfg, on_row, envs)
    # The CSVs this run wrote, in the order it wrote them (devices, then precisions); dict.fromkeys drops a file
    # named twice (a repeated precision, two devices of one environment).
    candidates = dict.fromkeys(out / e.csv_name(p) for e in envs.values() for p in cfg.precisions)
    csvs = [path for path in candidates if path.is_file()]
    files = csvs + ([] if no_plot else plot_results(out, envs, cfg.precisions))
    run_id = track_results(cfg, rows, files, not no_track, tracking_uri)
    click.echo("written: " + ", ".join(map(str, files)))
    if run_id:
        click.echo(f"MLflow run: {run_id}")


if __name__ == "__main__":  # python -m vaezoo.bench.throughput: needs none of the other CLI modules
    import sys

    from vaezoo.clitools import run_click

    sys.exit(run_click(throughput_command))
