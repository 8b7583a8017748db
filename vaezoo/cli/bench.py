"""The ``vaezoo bench`` group. Each benchmark's command lives beside its code in ``vaezoo.bench`` and is
imported only when it is run or its help is shown, so ``vaezoo --help`` does not load torch."""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of its click command
BENCHMARKS = {
    "main": "vaezoo.bench.main:main_command",
    "gradvar": "vaezoo.bench.gradvar:gradvar_command",
    "throughput": "vaezoo.bench.throughput.command:throughput_command",
    "sampling": "vaezoo.bench.sampling:sampling_command",
    "claims": "vaezoo.bench.claims:claims_command",  # an alias: the tutorial's studies
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *self.lazy]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.lazy:
            return super().get_command(ctx, name)
        module, attribute = self.lazy[name].split(":")
        return getattr(importlib.import_module(module), attribute)


@click.group("bench", cls=LazyGroup, lazy=BENCHMARKS)
def bench() -> None:
    """Benchmarks: the main job, gradient variance, throughput, sampling, the tutorial's claims."""
