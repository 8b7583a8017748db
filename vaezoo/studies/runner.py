"""Running a study: check the inputs and the output folder before any work, fan the jobs out to worker
processes (or to a Ray cluster: ``vaezoo.studies.cluster``), gather their numbers in the jobs' own order, and
write the report, the JSON of every number and the MLflow parent run (one child per trained model or fit).

Results do not depend on scheduling: each job is seeded from its own seed and runs single-threaded in
torch (a different thread count can change the order of float sums), so ``--workers 0`` (in this process),
1 or 8, or ``--ray ADDRESS``, give the same numbers.

Output folder layout: ``report.md`` (claim, verdict, tables, figures), ``study.json`` (every number, and the
study's name: it marks the folder as this study's), the figures as PNG files, and ``runs/`` (each job's run
folder) unless ``runs_dir`` puts them elsewhere.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from vaezoo.core.configs import save_json
from vaezoo.core.errors import VaezooError
from vaezoo.core.io import atomic_write_bytes, atomic_write_text, make_dir
from vaezoo.studies import cluster
from vaezoo.studies.base import Job, JobContext, Report, Study
from vaezoo.studies.registry import get_study

MARKER = "study.json"
MIN_SEEDS = 3  # every number from training carries an interval over at least 3 seeds


def resolve_preset(study: Study, preset: str) -> dict:
    if preset not in study.presets:
        raise VaezooError(f"unknown preset '{preset}' for study '{study.name}'; choose from {', '.join(study.presets)}")
    return dict(study.presets[preset])


def check_out_folder(out: Path, name: str, force: bool) -> None:
    """Refuse (without --force) a folder that holds another study's results or anything that is not a
    study's; a folder with this study's earlier results is rewritten."""
    if force or not out.exists():
        return
    if not out.is_dir():
        raise VaezooError(f"output folder '{out}' is a file")
    if not any(out.iterdir()):
        return
    marker = out / MARKER
    if not marker.is_file():
        raise VaezooError(f"output folder '{out}' is not empty and holds no study's results; choose another or pass --force")
    try:
        owner = json.loads(marker.read_text()).get("study")
    except (OSError, json.JSONDecodeError, AttributeError):
        owner = None
    if owner != name:
        raise VaezooError(f"output folder '{out}' holds the results of study '{owner}', not '{name}'; "
                          "choose another folder or pass --force")


def metric_name(key: str) -> str:
    """A report's number key as MLflow accepts it (alphanumerics, _ - . space : /): 'N(0, I)' -> 'N_0_ I_'."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", key)


def _execute(name: str, job: Job, ctx: JobContext) -> tuple[str, dict]:
    """One job, in a worker process (or this one): single-threaded torch, children of the parent run."""
    import torch

    from vaezoo.tracking import ui

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ui.parent_run(ctx.parent_run_id):
            return job.key, get_study(name).run_job(job, ctx)
    finally:
        torch.set_num_threads(threads)


def default_workers() -> int:
    """One worker process per CPU core this process may use (jobs are single-threaded)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_jobs(name: str, jobs: list[Job], ctx: JobContext, workers: int, ray=None) -> dict[str, dict]:
    """Every job's numbers keyed by job.key, in the order of ``jobs`` whatever order they finished in; on the Ray
    cluster ``ray`` (a connected ``ray`` module) when given, else in ``workers`` processes (0: this one)."""
    if ray is not None:
        done = dict(cluster.gather(ray, _execute, [(name, job, ctx) for job in jobs]))
    elif workers == 0:
        done = dict(_execute(name, job, ctx) for job in jobs)
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
            done = dict(f.result() for f in [pool.submit(_execute, name, job, ctx) for job in jobs])
    return {job.key: done[job.key] for job in jobs}


def render(study: Study, preset: str, seeds: list[int], report: Report, command: str) -> str:
    """The markdown report: claim, verdict and why first, then the study's own sections."""
    head = [
        f"# Study `{study.name}`",
        "",
        f"**Claim.** {study.claim}",
        "",
        f"*Source:* {study.source}",
        "",
        f"**Verdict: {report.verdict}.** {report.why}",
        "",
        f"Preset `{preset}`, seeds {', '.join(map(str, seeds))}. Regenerate: `{command}`. Intervals are 95% "
        "Student-t intervals over seeds (mean [lo, hi]) unless a section says otherwise.",
        "",
    ]
    return "\n".join(head + [s.rstrip() + "\n" for s in report.sections])


def run_study(name: str, preset: str, out: Path, *, seeds: int | None = None, workers: int | None = None,
              runs_dir: Path | None = None, force: bool = False, track: bool = True,
              tracking_uri: str | None = None, ray_address: str | None = None) -> dict:
    """Run study ``name`` with ``preset`` and write its report into ``out``; returns the study.json dict. The jobs
    run on the Ray cluster at ``ray_address`` when given, else in ``workers`` processes."""
    study = get_study(name)
    params = resolve_preset(study, preset)
    n_seeds = params.pop("seeds", MIN_SEEDS) if seeds is None else seeds
    params.pop("seeds", None)
    if study.trains and n_seeds < MIN_SEEDS:
        raise VaezooError(f"--seeds must be >= {MIN_SEEDS} (intervals over seeds), got {n_seeds}")
    if n_seeds < 1:
        raise VaezooError(f"--seeds must be >= 1, got {n_seeds}")
    if ray_address is not None and workers is not None:
        raise VaezooError("--workers and --ray both say where the jobs run; give one")
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise VaezooError(f"--workers must be >= 0, got {workers}")
    out = Path(out)
    check_out_folder(out, name, force)
    # connected before any folder is made: a missing Ray or an unreachable cluster leaves nothing behind
    with cluster.connected(ray_address) as ray:
        return _run_checked(study, preset, params, n_seeds, out, workers, ray, runs_dir, track, tracking_uri)


def _run_checked(study: Study, preset: str, params: dict, n_seeds: int, out: Path, workers: int, ray,
                 runs_dir: Path | None, track: bool, tracking_uri: str | None) -> dict:
    """``run_study`` once its inputs passed: the runs folder, the jobs, the parent run, the report."""
    name = study.name
    make_dir(out)
    # a fresh folder per invocation: a rerun never meets its predecessor's run folders
    root = make_dir(Path(runs_dir) if runs_dir else out / "runs", "runs folder")
    runs = Path(tempfile.mkdtemp(prefix=f"{name}-{preset}-{time.strftime('%Y%m%d-%H%M%S')}-", dir=root))
    seed_list = list(range(n_seeds))
    jobs = study.jobs(params, seed_list)
    command = f"vaezoo study {name} --preset {preset} --seeds {n_seeds}"

    from vaezoo import tracking
    from vaezoo.tracking import ui
    from vaezoo.tracking.provenance import git_state

    git_sha = git_state()["git_sha"]
    parent = tracking.start(track, f"study-{name}-{preset}", tracking_uri)
    ui.present(parent, f"study-{name}-{preset}", "study", git_sha, entry="vaezoo study")
    parent.log_params({**tracking.flatten(params), "study": name, "preset": preset, "seeds": n_seeds})
    ctx = JobContext(runs_dir=runs.resolve(), track=track, tracking_uri=parent.uri, parent_run_id=parent.run_id)
    status = "FAILED"
    try:
        t0 = time.perf_counter()
        results = run_jobs(name, jobs, ctx, workers, ray)
        report = study.analyse(params, seed_list, results)
        # keys starting with "_" are files a job hands to the report (e.g. a grid's path), not numbers
        numbers_only = {key: {k: v for k, v in r.items() if not k.startswith("_")} for key, r in results.items()}
        record = {"study": name, "preset": preset, "params": params, "seeds": seed_list, "claim": study.claim,
                  "verdict": report.verdict, "why": report.why, "numbers": report.numbers, "jobs": numbers_only,
                  "git_sha": git_sha}
        for fname, png in report.figures.items():
            atomic_write_bytes(out / fname, png)
        atomic_write_text(out / "report.md", render(study, preset, seed_list, report, command))
        save_json(out / MARKER, record)
        parent.log_metrics({metric_name(k): v for k, v in tracking.flatten(report.numbers).items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)}, 0)
        parent.set_tags({"vaezoo.verdict": report.verdict, "vaezoo.study_seconds": round(time.perf_counter() - t0, 1)})
        for f in ("report.md", MARKER, *report.figures):
            parent.log_artifact(out / f)
        status = "FINISHED"
    finally:
        parent.end(status)
    return record


def child_run(ctx: JobContext, name: str, params: dict, metrics: dict) -> None:
    """A job that fits something other than a vaezoo training run (e.g. a 1-D Gaussian) logs itself as a
    child of the study's parent run."""
    from vaezoo import tracking
    from vaezoo.tracking import ui
    from vaezoo.tracking.provenance import git_state

    tracker = tracking.start(ctx.track, name, ctx.tracking_uri)
    ui.present(tracker, name, "study-fit", git_state()["git_sha"], parent_run_id=ctx.parent_run_id, entry="vaezoo study")
    tracker.log_params(params)
    tracker.log_metrics(metrics, 0)
    tracker.end()
