"""PNG grids of images (prior samples, reconstructions), written atomically.

numpy and the standard library only (zlib), so the torch-free runtime writes its grids with it too."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np

from vaezoo.core.io import atomic_write_bytes


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


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 [H, W] (grey) or [H, W, 3] (RGB) -> PNG bytes (8-bit, no interlace, filter 0 on every row)."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ValueError(f"expected uint8 [H, W] or [H, W, 3], got {pixels.dtype} {pixels.shape}")
    h, w = pixels.shape[:2]
    colour = 0 if pixels.ndim == 2 else 2
    rows = np.ascontiguousarray(pixels).reshape(h, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def save_png(path: str | Path, array: np.ndarray) -> None:
    atomic_write_bytes(path, encode_png(array))


def save_grid(path: str | Path, images: np.ndarray, ncol: int | None = None) -> Path:
    """Save images as a PNG grid; images that are not 2-D pictures are drawn as one row each."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 2:  # vectors (e.g. linear-Gaussian data): one strip per datapoint
        lo, hi = images.min(), images.max()
        images = ((images - lo) / (hi - lo + 1e-12))[:, None, None, :]
    save_png(path, grid(images, ncol))
    return Path(path)
