"""The ``vaezoo`` command group. Each command group lives in its own module of ``vaezoo.cli``; none of
them imports torch at import time, so ``vaezoo --help`` stays fast and works before torch is loaded."""

from __future__ import annotations

import click

from vaezoo.cli import bench, distribution, info, report, study
from vaezoo.cli import train as train_commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vaezoo")
def cli() -> None:
    """vaezoo: reference VAEs, their bounds and gradient estimators, and honest benchmarks."""


for _command in (*info.COMMANDS, *train_commands.COMMANDS, bench.bench, *distribution.COMMANDS, *report.COMMANDS,
                 *study.COMMANDS):
    cli.add_command(_command)
