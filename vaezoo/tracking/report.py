"""``vaezoo report``: one self-contained HTML page (images inlined as data URIs) and a markdown twin, built
from the runs of an MLflow experiment: a run table, the metrics of training and evaluation runs (with their
Monte Carlo intervals), training curves, benchmark plots, sample grids and each run's provenance.

Reads the store only through ``MlflowClient``; matplotlib (Agg) draws the plots.
"""

from __future__ import annotations

import base64
import html
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from vaezoo.core.errors import VaezooError
from vaezoo.core.io import atomic_write_bytes, atomic_write_text, make_dir

# the headline figures of a training / evaluation run, in the order a reader compares them (nats per datapoint)
HEADLINE = ("test_elbo", "test_iwae_k64", "elbo", "iwae_k64", "ll_is", "active_units", "kl", "train_bound",
            "samples_per_s")
INTERVALS = {"ll_is": "ll_is_mc_se"}  # a metric -> the standard error logged beside it
PROVENANCE = ("mlflow.source.git.commit", "git_dirty", "version.torch", "version.mlflow", "device_name",
              "torch_threads", "seed")


@dataclass
class RunView:
    """What the report needs of one run."""

    run_id: str
    name: str
    kind: str
    status: str
    start: float
    seconds: float | None
    metrics: dict
    tags: dict
    params: dict
    histories: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)  # label -> PNG bytes


def _client(uri: str | None):
    from mlflow.tracking import MlflowClient

    from vaezoo.tracking.runs import tracking_uri

    return MlflowClient(tracking_uri(uri))


def _kind(run) -> str:
    tags = run.data.tags
    if "vaezoo.kind" in tags:
        return tags["vaezoo.kind"]
    return tags.get("benchmark") or ("train" if "train_bound" in run.data.metrics else "other")


def collect(experiment: str, uri: str | None = None, max_runs: int = 200) -> list[RunView]:
    """The experiment's runs, newest first, with training curves and sample grids of training runs."""
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise VaezooError(f"no experiment '{experiment}' in the store at {client.tracking_uri} (experiments: {names})")
    runs = client.search_runs([exp.experiment_id], max_results=max_runs, order_by=["attributes.start_time DESC"])
    views = []
    for r in runs:
        end = r.info.end_time
        v = RunView(r.info.run_id, r.info.run_name, _kind(r), r.info.status, r.info.start_time / 1000,
                    (end - r.info.start_time) / 1000 if end else None, dict(r.data.metrics), dict(r.data.tags),
                    dict(r.data.params))
        if v.kind == "train":
            for name in ("train_bound", "test_elbo"):
                if name in v.metrics:
                    v.histories[name] = [(m.step, m.value) for m in client.get_metric_history(v.run_id, name)]
            v.images = _sample_grids(client, v.run_id)
        views.append(v)
    return views


def _sample_grids(client, run_id: str) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("samples.png", "samples-recon.png"):
            try:
                out[name] = Path(client.download_artifacts(run_id, name, tmp)).read_bytes()
            except Exception:  # a run without that grid (stopped early, or not a sampling run): leave it out
                continue
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def metric_rows(views: list[RunView]) -> tuple[list[str], list[list[str]]]:
    """Headline metrics of training and evaluation runs; a metric with a logged standard error shows it."""
    shown = [v for v in views if v.kind in ("train", "eval")]
    cols = [m for m in HEADLINE if any(m in v.metrics for v in shown)]
    rows = []
    for v in shown:
        cells = [v.name, v.kind]
        for m in cols:
            if m not in v.metrics:
                cells.append("")
            elif INTERVALS.get(m) in v.metrics:
                cells.append(f"{_fmt(v.metrics[m])} ± {_fmt(v.metrics[INTERVALS[m]])}")
            else:
                cells.append(_fmt(v.metrics[m]))
        rows.append(cells)
    return ["run", "kind", *cols], rows


def run_rows(views: list[RunView]) -> tuple[list[str], list[list[str]]]:
    head = ["run", "kind", "status", "started", "seconds", "commit", "run id"]
    rows = [[v.name, v.kind, v.status, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.start)),
             "" if v.seconds is None else f"{v.seconds:.1f}", v.tags.get("mlflow.source.git.commit", "")[:10],
             v.run_id[:12]] for v in views]
    return head, rows


def provenance_rows(views: list[RunView]) -> tuple[list[str], list[list[str]]]:
    return ["run", *PROVENANCE], [[v.name, *(v.tags.get(k, "") for k in PROVENANCE)] for v in views]


def _png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def figures(views: list[RunView]) -> dict[str, bytes]:
    """Training curves, throughput bars and gradient-variance slopes with their intervals, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    trains = [v for v in views if v.histories]
    if trains:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for ax, name in zip(axes, ("train_bound", "test_elbo")):
            for v in trains:
                if v.histories.get(name):
                    steps, values = zip(*v.histories[name])
                    ax.plot(steps, values, marker="o", ms=3, label=v.name)
            ax.set(xlabel="step", ylabel=f"{name} (nats)", title=name)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        out["Training curves"] = _png(fig)
        plt.close(fig)
    for v in views:
        if v.kind == "throughput":
            out[f"Throughput: {v.name}"] = _bars(plt, {k[: -len(".samples_per_s")]: x for k, x in v.metrics.items()
                                                       if k.endswith(".samples_per_s")}, "samples / s")
        elif v.kind == "gradvar":
            out[f"Gradient variance slopes: {v.name}"] = _slopes(plt, v.metrics)
    return {k: b for k, b in out.items() if b}


def _bars(plt, values: dict, label: str) -> bytes:
    if not values:
        return b""
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(values) + 1))
    names = sorted(values)
    ax.barh(names, [values[n] for n in names])
    ax.set(xlabel=label)
    ax.tick_params(axis="y", labelsize=7)
    png = _png(fig)
    plt.close(fig)
    return png


def _slopes(plt, metrics: dict) -> bytes:
    """Each fitted slope with its interval (the .lo and .hi the study logged beside it)."""
    keys = sorted(k for k in metrics if k.startswith("slope.") and not k.endswith((".lo", ".hi")))
    keys = [k for k in keys if f"{k}.lo" in metrics and f"{k}.hi" in metrics]
    if not keys:
        return b""
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(keys) + 1))
    y = range(len(keys))
    mid = [metrics[k] for k in keys]
    err = [[m - metrics[f"{k}.lo"] for k, m in zip(keys, mid)], [metrics[f"{k}.hi"] - m for k, m in zip(keys, mid)]]
    ax.errorbar(mid, list(y), xerr=err, fmt="o", capsize=3)
    ax.set_yticks(list(y), [k[len("slope."):] for k in keys], fontsize=7)
    ax.set(xlabel="log-log slope (interval as logged)")
    ax.grid(alpha=0.3)
    png = _png(fig)
    plt.close(fig)
    return png


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows])


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f0f0f0}img{max-width:100%;border:1px solid #ddd}figure{display:inline-block;margin:0 1em 1em 0}
img.grid{width:420px;image-rendering:pixelated}h2{border-bottom:1px solid #ddd;padding-bottom:3px}.small{color:#666;font-size:12px}"""


def write_report(experiment: str, out: str | Path, uri: str | None = None) -> dict:
    """Write ``out/report.html`` (self-contained) and ``out/report.md`` (+ its images in ``out/img``)."""
    views = collect(experiment, uri)
    out = Path(out)
    make_dir(out / "img", "report folder")
    sections = [("Runs", run_rows(views)), ("Metrics (nats per test datapoint; ± is the Monte Carlo s.e.: for ll_is, the s.d. of 10 replicate-group estimates)", metric_rows(views)),
                ("Provenance", provenance_rows(views))]
    images = {**figures(views), **{f"{v.name}: {k}": b for v in views for k, b in v.images.items()}}
    files = {}
    for i, (label, png) in enumerate(images.items()):
        files[label] = f"img/{i:02d}.png"
        atomic_write_bytes(out / files[label], png)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    intro = f"Experiment `{experiment}`, {len(views)} runs, written {stamp}."
    md = [f"# vaezoo report: {experiment}", "", intro, ""]
    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>vaezoo report: {html.escape(experiment)}</title>"
            f"<style>{CSS}</style></head><body><h1>vaezoo report: {html.escape(experiment)}</h1>"
            f"<p class='small'>{html.escape(intro)}</p>"]
    for title, (head, rows) in sections:
        md += [f"## {title}", "", _md_table(head, rows) if rows else "(none)", ""]
        page.append(f"<h2>{html.escape(title)}</h2>" + (_html_table(head, rows) if rows else "<p>(none)</p>"))
    md += ["## Plots and sample grids", ""]
    page.append("<h2>Plots and sample grids</h2>")
    for label, png in images.items():
        md += [f"### {label}", "", f"![{label}]({files[label]})", ""]
        data = base64.b64encode(png).decode()
        grid = " class='grid'" if label.endswith(".png") else ""  # sample grids: small images, drawn larger, pixels kept
        page.append(f"<figure><figcaption>{html.escape(label)}</figcaption><img{grid} src='data:image/png;base64,{data}'></figure>")
    page.append("</body></html>")
    atomic_write_text(out / "report.md", "\n".join(md))
    atomic_write_text(out / "report.html", "\n".join(page))
    return {"html": out / "report.html", "markdown": out / "report.md", "runs": len(views), "images": len(images)}
