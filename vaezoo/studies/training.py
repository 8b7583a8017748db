"""Training inside a study's job: one seeded vaezoo training run (a child of the study's MLflow run), then
its model and the data it is measured on."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from vaezoo.studies.base import Job, JobContext


@dataclass
class StudyData:
    """Binary images (binarised once with fixed seeds, as evaluation does) and the grey originals."""

    train: torch.Tensor
    test: torch.Tensor
    train_raw: torch.Tensor
    test_raw: torch.Tensor
    labels: dict | None


@functools.lru_cache(maxsize=4)
def study_data(name: str, binarize: str) -> StudyData:
    from vaezoo.data import DataConfig, eval_binarized, load_dataset

    ds = load_dataset(DataConfig(name=name, binarize=binarize))
    return StudyData(eval_binarized(ds.train, binarize, seed=1), eval_binarized(ds.test, binarize), ds.train, ds.test,
                     ds.labels)


def user_config(params: dict, seed: int, model: dict, objective: dict | None = None, batch_size: int | None = None) -> dict:
    """The training config of a study's model: the preset's dataset, networks and steps, this job's seed."""
    return {
        "model": {"hidden": list(params["hidden"]), "latent_dim": params["latent_dim"], **model},
        "objective": objective or {},
        "data": {"name": params["dataset"]},
        "steps": params["steps"],
        "batch_size": batch_size or params.get("batch_size", 128),
        "seed": seed,
        "eval_every": params["steps"],
        "checkpoint_every": params["steps"],
        "log_every": max(1, params["steps"] // 10),
    }


def train_job(job: Job, ctx: JobContext, user: dict, observe=None):
    """Train ``user`` (a config dict) in ``ctx.runs_dir / job.key``; returns (model in eval mode, config, final metrics).
    ``observe``: training's observer, ``observe(step, model, test_metrics)`` at each ``eval_every`` step (True stops)."""
    from vaezoo.training import load_run_model, resolve_for_dataset, train

    cfg = resolve_for_dataset(user)
    run_dir = ctx.runs_dir / job.key.replace("/", "-")
    final = train(cfg, run_dir, track=ctx.track, tracking_uri=ctx.tracking_uri, progress=False, observe=observe)
    model, _ = load_run_model(run_dir)
    return model.eval(), cfg, final


def variant_jobs(variants, params: dict, seeds: list[int]) -> list[Job]:
    """One job per (variant, seed), keyed ``variant/seedN``, for ``train_variant`` to run."""
    return [Job(f"{v}/seed{s}", s, {"variant": v, "params": params}) for v in variants for s in seeds]


def train_variant(job: Job, ctx: JobContext, variants: dict):
    """Train the variant ``job.payload["variant"]`` names in ``variants`` (label -> (model config, objective)) with
    the preset's networks; returns (model, its StudyData, final metrics)."""
    model_cfg, objective = variants[job.payload["variant"]]
    model, cfg, final = train_job(job, ctx, user_config(job.payload["params"], job.seed, model_cfg, objective))
    return model, study_data(cfg.data.name, cfg.data.binarize), final
