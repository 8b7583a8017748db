"""Prior samples and reconstructions of a trained model, as PNG grids."""

from __future__ import annotations

from pathlib import Path

import torch

from vaezoo.core.errors import VaezooError
from vaezoo.core.png import save_grid

MAX_GRID = 4096  # a 64 x 64 grid: more is not a picture anyone reads, and all of it is one batch


@torch.no_grad()
def write_sample_grids(model, x_test: torch.Tensor, n: int, out: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """``out``: n prior samples (mean of p(x|z), z ~ N(0, I)); ``<stem>-recon.png``: rows of test
    images alternating with their reconstructions (decoder mean at z = mu(x))."""
    if not 1 <= n <= MAX_GRID:
        raise VaezooError(f"-n must be between 1 and {MAX_GRID} (images in one PNG grid), got {n}")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise VaezooError(f"--out must name a .png file, got '{out}'")
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    samples = model.sample(n, generator=g).cpu()
    save_grid(out, samples.numpy())
    # evenly spaced test images: a split sorted by label would otherwise show one class only
    idx = torch.linspace(0, len(x_test) - 1, min(len(x_test), max(1, n // 2))).long()
    x = x_test[idx].to(device)
    recon = model.likelihood.mean(model.decode(model.encode(x).mu)).cpu()
    ncol = min(8, len(x))
    rows = []
    for i in range(0, len(x), ncol):
        rows += [x[i : i + ncol].cpu(), recon[i : i + ncol]]
    recon_path = out.with_name(out.stem + "-recon.png")
    save_grid(recon_path, torch.cat(rows).numpy(), ncol=ncol)
    return out, recon_path
