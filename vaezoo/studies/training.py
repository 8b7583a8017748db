"""Training inside a study's job: one seeded vaezoo training run (a child of the study's MLflow run), optionally
watched at each evaluation (snapshots during training, early stopping on a held-out validation set:
``EarlyStopping``), then its model and the data it is measured on."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
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
    factors: dict | None = None  # generative factor indices, where the data set has them (``shapes``)
    validation: torch.Tensor | None = None  # the held-out training images (DataConfig.validation), binarised once


@functools.lru_cache(maxsize=4)
def study_data(name: str, binarize: str, validation: int = 0) -> StudyData:
    from vaezoo.data import DataConfig, eval_binarized, load_dataset

    ds = load_dataset(DataConfig(name=name, binarize=binarize, validation=validation))
    held = None if ds.validation is None else eval_binarized(ds.validation, binarize, seed=2)
    return StudyData(eval_binarized(ds.train, binarize, seed=1), eval_binarized(ds.test, binarize), ds.train, ds.test,
                     ds.labels, ds.factors, held)


class EarlyStopping:
    """A ``train(..., observe=...)`` observer: scores the model on held-out data at each evaluation (``score``:
    model -> a bound, higher is better), keeps a copy of the best state, and stops the run once ``patience``
    evaluations in a row have not improved on it (``patience=None``: never stops, still keeps the best).
    ``history`` holds (step, score) of every evaluation; ``restore`` loads the best state into a model."""

    def __init__(self, score: Callable[[torch.nn.Module], float], patience: int | None) -> None:
        if patience is not None and patience < 1:
            raise ValueError(f"patience must be >= 1 evaluations, got {patience}")
        self.score, self.patience = score, patience
        self.history: list[tuple[int, float]] = []
        self.best, self.best_step, self.best_state = -math.inf, 0, None
        self.waited = 0

    def __call__(self, step: int, model: torch.nn.Module, metrics: dict) -> bool:
        value = float(self.score(model))
        self.history.append((step, value))
        if value > self.best:
            self.best, self.best_step, self.waited = value, step, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.waited += 1
        return self.patience is not None and self.waited >= self.patience

    def restore(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.best_state is None:
            raise RuntimeError("no evaluation was observed: there is no best state to restore")
        model.load_state_dict(self.best_state)
        return model


def held_out_bound(x: torch.Tensor, bound: str, k: int, seed: int) -> Callable[[torch.nn.Module], float]:
    """A score for EarlyStopping: the mean ``bound`` (elbo | iwae) with ``k`` samples on ``x``, drawn from the same
    seeded noise at every evaluation, so two evaluations differ by the model alone."""
    from vaezoo.objectives import ObjectiveConfig
    from vaezoo.training.evaluate import bound_on, iwae_batch

    cfg = ObjectiveConfig(bound=bound, k=k)

    def score(model: torch.nn.Module) -> float:
        model.eval()
        g = torch.Generator(device=x.device).manual_seed(seed)
        return bound_on(model, x, cfg, batch_size=iwae_batch(k), generator=g)

    return score


def user_config(params: dict, seed: int, model: dict, objective: dict | None = None, batch_size: int | None = None) -> dict:
    """The training config of a study's model: the preset's dataset, networks and steps, this job's seed; it is
    evaluated (and an observer called) every ``eval_every`` steps where the preset sets it, else at the end."""
    return {
        "model": {"hidden": list(params["hidden"]), "latent_dim": params["latent_dim"], **model},
        "objective": objective or {},
        "data": {"name": params["dataset"]},
        "steps": params["steps"],
        "batch_size": batch_size or params.get("batch_size", 128),
        "seed": seed,
        "eval_every": params.get("eval_every", params["steps"]),
        "checkpoint_every": params["steps"],
        "log_every": max(1, params["steps"] // 10),
    }


def train_job(job: Job, ctx: JobContext, user: dict, observe: Callable | None = None):
    """Train ``user`` (a config dict) in ``ctx.runs_dir / job.key``; returns (model in eval mode, config, final metrics).
    ``observe(step, model, test_metrics)`` is called at each evaluation (``vaezoo.training.train``'s observer)."""
    from vaezoo.training import load_run_model, resolve_for_dataset, train

    cfg = resolve_for_dataset(user)
    run_dir = ctx.runs_dir / job.key.replace("/", "-")
    final = train(cfg, run_dir, track=ctx.track, tracking_uri=ctx.tracking_uri, progress=False, observe=observe)
    model, _ = load_run_model(run_dir)
    return model.eval(), cfg, final


def variant_jobs(variants, params: dict, seeds: list[int]) -> list[Job]:
    """One job per (variant, seed), keyed ``variant/seedN``, for ``train_variant`` to run."""
    return [Job(f"{v}/seed{s}", s, {"variant": v, "params": params}) for v in variants for s in seeds]


def train_variant(job: Job, ctx: JobContext, variants: dict, observe: Callable | None = None):
    """Train the variant ``job.payload["variant"]`` names in ``variants`` (label -> (model config, objective)) with
    the preset's networks, watched by ``observe`` (see ``train_job``); returns (model, its StudyData, final metrics)."""
    model_cfg, objective = variants[job.payload["variant"]]
    user = user_config(job.payload["params"], job.seed, model_cfg, objective)
    model, cfg, final = train_job(job, ctx, user, observe)
    return model, study_data(cfg.data.name, cfg.data.binarize), final
