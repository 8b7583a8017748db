"""Checkpoints: tensors and plain data only (``torch.load(weights_only=True)``), written atomically.

A checkpoint holds the model, the optimizer, the estimator's state (the score baseline), the step,
the RNG state and the resolved config with its hash. The data order and the latent noise at step t
are pure functions of (seed, t) (see ``vaezoo.train.step_generators``), so the step pins both.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vaezoo.errors import VaezooError
from vaezoo.io import atomic_write

FORMAT = "vaezoo-checkpoint-1"


def save_checkpoint(path: str | Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise VaezooError(f"no checkpoint at '{path}'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise VaezooError(f"checkpoint '{path}' is corrupt or not a vaezoo checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise VaezooError(f"checkpoint '{path}' is not a vaezoo checkpoint (format {FORMAT} expected)")
    return state
