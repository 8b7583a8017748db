"""``shapes``: a small dSprites-like set (Matthey et al. 2017) that vaezoo renders itself, offline and exactly.

Every combination of four factors on a known discrete grid is drawn once: shape (square, ellipse, triangle,
heart), scale (4 sizes), x and y position (10 each): 1,600 binary 32x32 images. A pixel is on when its centre
lies inside the shape, so rendering is a pure function of the factors (no randomness at all); only the
train/test split is seeded. The factor indices are kept beside the images, for disentanglement measures
(``vaezoo.studies.disentanglement``) that need the true generative factors.
"""

from __future__ import annotations

import itertools

import numpy as np

SIZE = 32
SHAPES = ("square", "ellipse", "triangle", "heart")
SCALES = (4.0, 5.5, 7.0, 8.5)  # half-width of the shape in pixels
POSITIONS = tuple(float(p) for p in np.linspace(9.5, 21.5, 10))  # centres, leaving room for the largest shape
FACTORS = ("shape", "scale", "x", "y")
GRID = (len(SHAPES), len(SCALES), len(POSITIONS), len(POSITIONS))


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether (u, v) lies in the unit-sized shape centred at 0 (v points up)."""
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "ellipse":
        return u**2 + (v / 0.55) ** 2 <= 1.0
    if shape == "triangle":  # apex up, base at v = -0.8
        return (v >= -0.8) & (np.abs(u) <= (1.0 - v) / 1.8)
    if shape == "heart":  # (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, scaled to about [-1, 1]
        x, y = u * 1.15, v * 1.15 + 0.1
        return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0
    raise ValueError(f"unknown shape '{shape}'")


def render(shape: int, scale: int, x: int, y: int) -> np.ndarray:
    """The binary image [SIZE, SIZE] of one grid point, given as factor indices."""
    centres = np.arange(SIZE) + 0.5
    cols, rows = np.meshgrid(centres, centres)
    s = SCALES[scale]
    u, v = (cols - POSITIONS[x]) / s, (POSITIONS[y] - rows) / s
    return _inside(SHAPES[shape], u, v).astype(np.float32)


def factor_grid() -> np.ndarray:
    """Every combination of factor indices [N, 4] (shape, scale, x, y), in a fixed order."""
    return np.array(list(itertools.product(*(range(n) for n in GRID))), dtype=np.int64)


def render_all() -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 1, SIZE, SIZE] in {0, 1}, factor indices [N, 4]) of the whole grid."""
    factors = factor_grid()
    images = np.stack([render(*f) for f in factors])[:, None]
    return images, factors
