"""What a study is: a claim, presets, the independent jobs it needs (one per trained model or fit), what one
job measures, and how the jobs' numbers add up to a report with a verdict.

A study module defines one subclass and one instance, ``STUDY``; ``vaezoo.studies.registry`` names it. Jobs run
in worker processes (``vaezoo.studies.runner``), so ``run_job`` gets only picklable, JSON-able inputs and
returns a JSON-able dict; everything random in it is seeded from ``job.seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

VERDICTS = ("holds", "does not hold", "depends")


@dataclass(frozen=True)
class Job:
    """One independent unit of work: ``key`` names it in the results (e.g. ``ae/seed1``)."""

    key: str
    seed: int
    payload: dict


@dataclass(frozen=True)
class JobContext:
    """Where a job writes its run folder and how it is tracked (a child of the study's parent run)."""

    runs_dir: Path
    track: bool = False
    tracking_uri: str | None = None
    parent_run_id: str | None = None


@dataclass
class Report:
    """A study's outcome. ``sections`` are markdown blocks in order; ``figures`` maps a PNG file name to its
    bytes (the report links them by name); ``numbers`` is every figure the verdict rests on."""

    verdict: str
    why: str
    sections: list[str]
    numbers: dict
    figures: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got '{self.verdict}'")


class Study:
    """A claim measured: subclasses set ``name``, ``claim``, ``source`` and ``presets`` (at least ``tiny``
    for tests, ``quick`` for `make studies`, ``full`` for the real recipe) and define the three methods."""

    name: str = ""
    claim: str = ""
    source: str = ""  # where the claim comes from
    trains: bool = True  # whether jobs train networks (then >= 3 seeds are required)
    presets: dict[str, dict] = {}

    def jobs(self, params: dict, seeds: list[int]) -> list[Job]:
        raise NotImplementedError

    def run_job(self, job: Job, ctx: JobContext) -> dict:
        raise NotImplementedError

    def analyse(self, params: dict, seeds: list[int], results: dict[str, dict]) -> Report:
        raise NotImplementedError
