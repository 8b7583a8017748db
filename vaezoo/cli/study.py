"""``vaezoo study NAME``: run one reproduction study and write its report; ``vaezoo study --list``."""

from __future__ import annotations

import time

import click

from vaezoo.cli.options import tracking_options
from vaezoo.core.errors import VaezooError


@click.command("study")
@click.argument("name", required=False)
@click.option("--list", "list_studies", is_flag=True, help="Name each study with one line, then exit.")
@click.option("--quick", "shortcut", flag_value="quick", help="The minutes-on-a-CPU preset (the default).")
@click.option("--full", "shortcut", flag_value="full", help="The real recipe (a GPU or a long CPU run).")
@click.option("--preset", default=None, help="A preset by name (tiny | quick | full).")
@click.option("--seeds", type=int, default=None, help="Seeds per model (>= 3 where models are trained). [preset's]")
@click.option("--out", "out_dir", default=None, help="Output folder. [runs/study-NAME-<time>]")
@click.option("--runs-dir", default=None, help="Where the trained models' run folders go. [OUT/runs]")
@click.option("--workers", type=int, default=None,
              help="Worker processes for the independent trainings (0: in this process). [one per CPU core]")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Run each training as a one-CPU task on the Ray cluster at ADDRESS (host:port, or auto) instead of "
                   "--workers; needs pip install 'vaezoo[ray]', and on several machines a --runs-dir they all mount.")
@click.option("--force", is_flag=True, help="Write into an output folder that holds something else.")
@tracking_options
def study_command(name, list_studies, shortcut, preset, seeds, out_dir, runs_dir, workers, ray_address, force, no_track,
                  tracking_uri) -> None:
    """Run reproduction study NAME: a claim, measured over seeds, with a report and a verdict."""
    from vaezoo.studies.registry import STUDIES

    if list_studies:
        width = max(map(len, STUDIES))
        for study, (_, summary) in STUDIES.items():
            click.echo(f"{study:<{width}}  {summary}")
        return
    if name is None:
        raise VaezooError("name a study (vaezoo study --list names them)")
    if shortcut and preset and shortcut != preset:
        raise VaezooError(f"--{shortcut} and --preset {preset} disagree; give one")
    from vaezoo.studies.runner import run_study

    out = out_dir or f"runs/study-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    record = run_study(name, preset or shortcut or "quick", out, seeds=seeds, workers=workers, runs_dir=runs_dir,
                       force=force, track=not no_track, tracking_uri=tracking_uri, ray_address=ray_address)
    click.echo(f"{name}: {record['verdict']}. {record['why']}")
    click.echo(f"written: {out}/report.md, {out}/study.json")


COMMANDS = [study_command]
