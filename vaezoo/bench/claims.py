"""``vaezoo bench claims``: the tutorial's claims, each its study (``vaezoo study``), run one after another.

An alias kept for the command's old users: it used to train five models on one seed and print per-model averages
over all latent units (mean sigma, mean mu^2) and a dead-zone fraction. Averages over units hide what happens per
unit (the ``kl-pull`` study shows collapsed units at sigma ~ 1 beside used units at ~ 0.3, averaging to neither),
one seed gives no interval, and the dead-zone fraction compared prior draws with each model's own held-out codes,
so codes spread as N(0, 21 I) scored 0.000. Each claim is now a study with validated measures, seeds and a verdict;
this command runs the tutorial's studies and writes one table of their verdicts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from vaezoo.cli.options import tracking_options
from vaezoo.core.errors import VaezooError
from vaezoo.core.io import atomic_write_text, make_dir

# the tutorial's claims (../shared/seed/vae-tutorial.txt), in the order the tutorial makes them
TUTORIAL = ("prior-sampling", "interpolation", "organisation", "kl-pull", "kl-direction", "beta-sweep",
            "samples-per-z", "batch-size")


def chosen(only: str | None) -> list[str]:
    """The studies to run: all of TUTORIAL, or the comma-separated subset ``only`` names (unknown names refused)."""
    if not only:
        return list(TUTORIAL)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in TUTORIAL]
    if unknown or not names:
        raise VaezooError(f"--only names the tutorial's studies ({', '.join(TUTORIAL)}); got '{only}'")
    return names


def run_claims(names: list[str], preset: str, out: Path, workers: int | None, track: bool,
               tracking_uri: str | None = None) -> dict:
    """Each study into ``out/NAME``; ``out/claims.md`` and ``claims.json`` hold the verdicts with links."""
    from vaezoo.studies.runner import run_study

    verdicts = {}
    for name in names:
        record = run_study(name, preset, out / name, workers=workers, track=track, tracking_uri=tracking_uri)
        verdicts[name] = {"claim": record["claim"], "verdict": record["verdict"], "why": record["why"],
                          "report": f"{name}/report.md"}
        click.echo(f"{name}: {record['verdict']}. {record['why']}")
    summary = {"preset": preset, "studies": verdicts}
    atomic_write_text(out / "claims.json", json.dumps(summary, indent=2))
    atomic_write_text(out / "claims.md", markdown(summary))
    return summary


def markdown(summary: dict) -> str:
    rows = ["| study | claim | verdict |", "|---|---|---|"]
    for name, v in summary["studies"].items():
        rows.append(f"| [`{name}`]({v['report']}) | {v['claim']} | **{v['verdict']}**: {v['why']} |")
    return (f"# The tutorial's claims (preset `{summary['preset']}`)\n\nEach row is a study: its report holds the measure, "
            "its controls, the numbers with intervals over seeds, and why the verdict is what it is.\n\n"
            + "\n".join(rows) + "\n")


@click.command("claims")
@click.option("--preset", type=click.Choice(["tiny", "quick", "full"]), default="quick", show_default=True,
              help="The studies' preset.")
@click.option("--only", default=None, help=f"Comma-separated subset of: {', '.join(TUTORIAL)}. [all]")
@click.option("--workers", type=int, default=None, help="Worker processes per study. [one per CPU core]")
@click.option("--out", "out_dir", default=None, help="Output folder. [runs/claims-<time>]")
@tracking_options
def claims_command(preset, only, workers, out_dir, no_track, tracking_uri) -> None:
    """The tutorial's claims as studies (an alias: vaezoo study NAME runs one), with a table of their verdicts."""
    names = chosen(only)
    out = Path(out_dir or f"runs/claims-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and any(out.iterdir()):
        raise VaezooError(f"output folder '{out}' already exists and is not empty")
    make_dir(out)
    run_claims(names, preset, out, workers, track=not no_track, tracking_uri=tracking_uri)
    click.echo(f"written: {out / 'claims.md'}, {out / 'claims.json'}")
