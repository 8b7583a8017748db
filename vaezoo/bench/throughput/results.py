"""The benchmark's results: rows to CSV (named by environment, merged with earlier rows), PNG plots, an MLflow run."""

from __future__ import annotations

import time
from dataclasses import asdict, fields
from pathlib import Path

from vaezoo.bench.results import read_csv, write_csv
from vaezoo.bench.throughput.measure import ROW_FIELDS, Environment, Row, ThroughputConfig
from vaezoo.core.io import atomic_write
from vaezoo.tracking.provenance import resolve_device


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
    write_csv(path, [asdict(r) for r in rows], ROW_FIELDS, key)


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
    from vaezoo.core.configs import to_dict
    from vaezoo.tracking import ui
    from vaezoo.tracking.provenance import provenance

    if not track:
        return None
    tracker = tracking.start(True, f"throughput-{time.strftime('%Y%m%d-%H%M%S')}", uri)
    tracker.log_params(tracking.flatten(to_dict(cfg)))
    tags = provenance(resolve_device(cfg.devices[0]), cfg.seed)
    tracker.set_tags({**tags, "benchmark": "throughput"})
    ui.present(tracker, None, "throughput", tags["git_sha"], entry="vaezoo bench throughput")
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
