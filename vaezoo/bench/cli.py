"""The ``vaezoo bench`` group. Each benchmark lives in its own module and is added here."""

from __future__ import annotations

import click

from vaezoo.bench.claims import claims_command
from vaezoo.bench.gradvar import gradvar_command
from vaezoo.bench.main import main_command
from vaezoo.bench.sampling import sampling_command
from vaezoo.bench.throughput import throughput_command


@click.group("bench")
def bench() -> None:
    """Benchmarks: the main job, gradient variance, throughput, sampling, the tutorial's claims."""


for _command in (main_command, gradvar_command, throughput_command, sampling_command, claims_command):
    bench.add_command(_command)
