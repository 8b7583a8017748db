"""Test helpers shared by several test files (import as `from helpers import ...`)."""

from __future__ import annotations

import torch


def flat_grad(model) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in model.parameters()])


def grad_draws(model, objective, x: torch.Tensor, draws: int, seed: int = 0) -> torch.Tensor:
    """[draws, n_params]: the estimator's gradient of the *bound* (-loss) on a fixed batch, fresh noise each draw."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(draws):
        model.zero_grad(set_to_none=True)
        objective(model, x, g).loss.neg().backward()
        rows.append(flat_grad(model).double())
    return torch.stack(rows)


def run_cli(*args: str) -> int:
    from vaezoo.cli import main

    return main(list(args))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc, log=None, tries: int = 480) -> None:
    """Poll ``url`` until it answers; fail with the log's tail if ``proc`` (the server) exits first."""
    import time
    import urllib.request

    for _ in range(tries):
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            assert proc.poll() is None, f"server exited: {log.read_text()[-2000:] if log else ''}"
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer")


def vaezoo_command(*args: str, cwd=None, env=None, timeout: float = 600):
    """The real ``vaezoo`` console script of this environment, run in a subprocess (exit code, stdout, stderr)."""
    import subprocess
    import sys
    from pathlib import Path

    return subprocess.run([str(Path(sys.executable).parent / "vaezoo"), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def blocking_env(folder, *names: str) -> dict:
    """An environment in which importing each of ``names`` fails, as in an install that lacks them."""
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for name in names:
        (Path(folder) / name).mkdir()
        (Path(folder) / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(root)])}
