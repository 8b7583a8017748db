"""Figures for study reports: matplotlib (Agg) to PNG bytes, small enough to commit, and image grids."""

from __future__ import annotations

import io

import numpy as np

from vaezoo.core.png import encode_png, grid


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    pyplot().close(fig)
    return buf.getvalue()


def image_grid(images: np.ndarray, ncol: int = 8, scale: int | None = None) -> bytes:
    """Images [N, C, H, W] in [0, 1] as one PNG grid, scaled (by default) so 8x8 digits stay readable."""
    scale = scale or max(1, 56 // images.shape[-1])
    return encode_png(grid(np.asarray(images, dtype=np.float32), ncol, scale=scale))


def interval_bars(rows: list[tuple[str, dict]], xlabel: str, title: str, log: bool = False) -> bytes:
    """One horizontal bar per (label, t-interval dict) with its interval as an error bar; a dict without an
    interval (a control with no seeds) is drawn as a bare bar."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(rows) + 1.2))
    labels = [label for label, _ in rows]
    means = [iv["mean"] for _, iv in rows]
    err = [[max(0.0, iv["mean"] - iv["lo"]) if iv["lo"] == iv["lo"] else 0.0 for _, iv in rows],
           [max(0.0, iv["hi"] - iv["mean"]) if iv["hi"] == iv["hi"] else 0.0 for _, iv in rows]]
    ax.barh(labels, means, xerr=err, capsize=3, color="#7a9cc6")
    if log:
        ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set(xlabel=xlabel, title=title)
    ax.grid(alpha=0.3, axis="x")
    return to_png(fig)


def interval_points(rows: list[tuple[str, dict]], xlabel: str, title: str) -> bytes:
    """One point per (label, t-interval dict) with its interval, on an axis fitted to the intervals (not from 0):
    for figures such as log-likelihoods near -22 nats, whose bars from 0 would all look alike."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(rows) + 1.2))
    labels = [label for label, _ in rows]
    means = [iv["mean"] for _, iv in rows]
    err = [[max(0.0, iv["mean"] - iv["lo"]) for _, iv in rows], [max(0.0, iv["hi"] - iv["mean"]) for _, iv in rows]]
    ax.errorbar(means, range(len(rows)), xerr=err, fmt="o", capsize=4, color="#2b5d9b")
    ax.set_yticks(range(len(rows)), labels)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.invert_yaxis()
    ax.set(xlabel=xlabel, title=title)
    ax.grid(alpha=0.3, axis="x")
    return to_png(fig)
