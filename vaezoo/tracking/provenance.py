"""What a run records so it can be rerun: git state, library versions, device, CPU, threads, determinism."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

import torch

import vaezoo

DEVICES = ("auto", "cpu", "cuda")  # the names a config may hold; resolve_device also takes cuda:N
GIT_SHA_ENV = "VAEZOO_GIT_SHA"  # for a copy of the tree without its history (the lent GPU machine)
GIT_DIRTY_ENV = "VAEZOO_GIT_DIRTY"


def git_state(root: Path | None = None) -> dict:
    """The commit the code came from and whether tracked files (other than benchmarks/results/) differ from it.

    Where the tree has no history (git missing, no repository, or one without commits) the commit comes from
    $VAEZOO_GIT_SHA (and $VAEZOO_GIT_DIRTY), set by whoever copied the tree; otherwise it is "unknown".
    """
    root = root or Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else None

    try:
        # --verify: in a repository without commits a bare `rev-parse HEAD` prints "HEAD" and fails
        sha = git("rev-parse", "--verify", "--quiet", "HEAD^{commit}")
        # measured results are not code: a benchmark's own rewritten CSV must not mark the next run dirty
        status = git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)benchmarks/results") if sha else None
    except (OSError, subprocess.SubprocessError):
        sha = status = None
    if sha:
        return {"git_sha": sha, "git_dirty": "unknown" if status is None else str(bool(status)).lower()}
    return {
        "git_sha": os.environ.get(GIT_SHA_ENV, "").strip() or "unknown",
        "git_dirty": os.environ.get(GIT_DIRTY_ENV, "").strip().lower() or "unknown",
    }


def git_label(root: Path | None = None) -> str:
    """The commit as one benchmark-table cell: the sha, with "-dirty" when tracked files had changed
    (the numbers then came from code no commit holds) and "-dirty?" when that is not known."""
    state = git_state(root)
    suffix = {"false": "", "true": "-dirty"}.get(state["git_dirty"], "-dirty?")
    return state["git_sha"] + ("" if state["git_sha"] == "unknown" else suffix)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_features() -> str:
    """The vector extensions that decide CPU speed here (AVX2 vs AVX-512 vs AMX)."""
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
    return ",".join(f for f in wanted if f in flags) or "none"


def versions() -> dict:
    out = {"vaezoo": vaezoo.__version__, "torch": torch.__version__, "python": platform.python_version()}
    for pkg in ("numpy", "mlflow", "onnx", "onnxruntime"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``; any other name is a clear error here, before torch parses it."""
    from vaezoo.core.errors import VaezooError

    if not (name in DEVICES or re.fullmatch(r"cuda:\d+", name)):
        raise VaezooError(f"unknown device '{name}'; choose from cpu, cuda (or cuda:N), auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VaezooError("device 'cuda' requested but CUDA is not available here")
    return torch.device(name)


def set_determinism(deterministic: bool) -> None:
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def provenance(device: torch.device, seed: int) -> dict:
    """Tags for a run: everything needed to say where and how a number was made."""
    tags = {
        **git_state(),
        **{f"version.{k}": v for k, v in versions().items()},
        "device": str(device),
        "device_name": device_name(device),
        "cpu_model": cpu_model(),
        "cpu_features": cpu_features(),
        "torch_threads": str(torch.get_num_threads()),
        "seed": str(seed),
        "deterministic_algorithms": str(torch.are_deterministic_algorithms_enabled()).lower(),
        "cudnn_deterministic": str(torch.backends.cudnn.deterministic).lower(),
        "cudnn_benchmark": str(torch.backends.cudnn.benchmark).lower(),
    }
    return tags
