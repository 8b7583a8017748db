"""PNG grids of samples with the standard library (zlib), so the runtime needs no Pillow."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from vaezoo.images import grid
from vaezoo.io import atomic_write_bytes


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


def save_grid_png(path: str | os.PathLike, images: np.ndarray, ncol: int | None = None) -> Path:
    """Images [N, C, H, W] in [0, 1] as one PNG grid, written atomically."""
    atomic_write_bytes(path, encode_png(grid(np.asarray(images, dtype=np.float32), ncol)))
    return Path(path)
