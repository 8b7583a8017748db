"""``vaezoo report``: an HTML (self-contained) and markdown report of an MLflow experiment's runs."""

from __future__ import annotations

import click


@click.command("report")
@click.option("--experiment", default="vaezoo", show_default=True, help="MLflow experiment to report on.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for report.html and report.md.")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite in ./mlruns).")
def report_command(experiment, out, tracking_uri) -> None:
    """Write a report of EXPERIMENT's runs: run and metric tables, plots, sample grids, provenance."""
    from vaezoo.tracking.report import write_report

    r = write_report(experiment, out, tracking_uri)
    click.echo(f"report of {r['runs']} runs ({r['images']} images): {r['html']}  (markdown: {r['markdown']})")


COMMANDS = (report_command,)
