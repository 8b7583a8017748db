"""``vaezoo bench throughput`` (and ``python -m vaezoo.bench.throughput``): parse, validate, call ``run_throughput``."""

from __future__ import annotations

import click
import torch

from vaezoo.bench.throughput.measure import Row, ThroughputConfig, environment, run_throughput
from vaezoo.bench.throughput.results import HEADER, format_row, plot_results, save_results, track_results
from vaezoo.cli.options import comma_ints, comma_list, tracking_options
from vaezoo.core.errors import VaezooError
from vaezoo.core.io import make_dir
from vaezoo.tracking.provenance import resolve_device


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
@tracking_options
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
    names = comma_list(models, "--model") or ("vae",)
    if "all" in names:
        names = [s.name for s in list_models()]
    devs = comma_list(devices, "--device") or ("cpu",)
    if "auto" in devs:
        devs = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    cfg = ThroughputConfig(
        models=tuple(names),
        backbones=comma_list(backbones, "--backbone") or ("mlp", "conv"),
        batch_sizes=comma_ints(batch_sizes, "--batch-size") or (128, 512),
        devices=tuple(devs),
        modes=comma_list(modes, "--mode") or ("eager", "compile"),
        precisions=comma_list(precisions, "--precision") or ("fp32",),
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
