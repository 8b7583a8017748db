"""The ``vaezoo bench`` group. Each benchmark lives in its own module and adds its command here."""

from __future__ import annotations

import importlib

import click


@click.group("bench")
def bench() -> None:
    """Benchmarks: the main job, gradient variance, throughput, sampling."""


# (module, command attribute): a module not written yet is skipped.
COMMANDS = [
    ("vaezoo.bench.main", "main_command"),
    ("vaezoo.bench.gradvar", "gradvar_command"),
    ("vaezoo.bench.throughput", "throughput_command"),
    ("vaezoo.bench.sampling", "sampling_command"),
    ("vaezoo.bench.claims", "claims_command"),
]

for _module, _attr in COMMANDS:
    try:
        _mod = importlib.import_module(_module)
    except ModuleNotFoundError as _exc:
        if _exc.name != _module:
            raise
        continue
    bench.add_command(getattr(_mod, _attr))
