"""``vaezoo models`` and ``vaezoo datasets``: what is registered."""

from __future__ import annotations

import click


@click.command()
def models() -> None:
    """List the registered model variants."""
    from vaezoo.models import list_models

    for spec in list_models():
        extra = f"  [objective defaults: {spec.objective_defaults}]" if spec.objective_defaults else ""
        click.echo(f"{spec.name:10s} {spec.description}{extra}")


@click.command()
def datasets() -> None:
    """List the datasets (all usable offline)."""
    from vaezoo.data import DATASET_NOTES

    for name, note in DATASET_NOTES.items():
        click.echo(f"{name:16s} {note}")


COMMANDS = (models, datasets)
