"""PNG grids of images (prior samples, reconstructions), written atomically with Pillow."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from vaezoo.io import atomic_write_bytes


def grid(images: np.ndarray, ncol: int | None = None, pad: int = 1, scale: int = 2) -> np.ndarray:
    """images [N, C, H, W] or [N, H, W] in [0, 1] -> one uint8 array [rows, cols] (grey) or [.., 3]."""
    if images.ndim == 3:
        images = images[:, None]
    n, c, h, w = images.shape
    ncol = ncol or int(math.ceil(math.sqrt(n)))
    nrow = int(math.ceil(n / ncol))
    out = np.ones((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, ncol)
        out[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = images[i]
    out = np.clip(out, 0, 1)
    out = out.repeat(scale, axis=1).repeat(scale, axis=2)
    arr = (out * 255).round().astype(np.uint8)
    return arr[0] if c == 1 else arr.transpose(1, 2, 0)


def save_png(path: str | Path, array: np.ndarray) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def save_grid(path: str | Path, images: np.ndarray, ncol: int | None = None) -> Path:
    """Save images as a PNG grid; images that are not 2-D pictures are drawn as one row each."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 2:  # vectors (e.g. linear-Gaussian data): one strip per datapoint
        lo, hi = images.min(), images.max()
        images = ((images - lo) / (hi - lo + 1e-12))[:, None, None, :]
    save_png(path, grid(images, ncol))
    return Path(path)
