"""The training loop: seeded, checkpointed, resumable to the bit, stopped loudly by NaN or inf.

What a run leaves behind is described in ``vaezoo.training.rundir``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vaezoo import tracking
from vaezoo.core.configs import config_hash, save_json
from vaezoo.core.errors import TrainingDiverged, VaezooError
from vaezoo.core.io import make_dir
from vaezoo.core.phases import mark
from vaezoo.core.progress import bar as progress_bar
from vaezoo.data.datasets import Dataset, batch_indices, binarize_batch, eval_binarized, load_dataset, train_size
from vaezoo.models import build_model
from vaezoo.objectives import Objective
from vaezoo.tracking import journal, ui
from vaezoo.tracking.provenance import git_state, provenance, resolve_device, set_determinism
from vaezoo.training import distributed
from vaezoo.training.config import TrainConfig, check_batch_fits
from vaezoo.training.evaluate import bounds_on_test_set, eval_rows
from vaezoo.training.footprint import Footprint, check_fits
from vaezoo.training.rundir import RunDir, load_checkpoint, save_checkpoint
from vaezoo.training.samples import write_sample_grids

Observer = Callable[[int, torch.nn.Module, dict], "bool | None"]


def step_seed(seed: int, step: int, stream: int) -> int:
    """Independent seeds per (run seed, step, stream): the data order and noise at step t depend on t alone."""
    return (seed * 1_000_003 + step * 7_919 + stream * 104_729) % (2**63 - 1)


def build(cfg: TrainConfig, ds: Dataset, device: torch.device):
    """Model (seeded init), objective and optimizer for a config."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model)
    if cfg.model.output_bias == "data-mean":
        model.init_output_bias(ds.train.mean(0))
    model.to(device)
    objective = Objective(cfg.objective)
    objective.check_model(model)
    o = cfg.optim
    optimizer = torch.optim.Adam(model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=o.fused)
    return model, objective, optimizer


def evaluate_during_training(model, x_test, cfg: TrainConfig, device) -> dict:
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    model.eval()
    out = {f"test_{name}": value for name, value in bounds_on_test_set(model, x_test, cfg.eval_k, g).items()}
    model.train()
    return out


def _checked_resume(rd: RunDir, cfg_hash: str) -> dict | None:
    """The checkpoint to resume from (None: the run had not reached one), after checking that the run was
    written by this version with this very config."""
    record = rd.read_config_record()  # its hash is checked against the config it records
    if record.missing:
        raise VaezooError(
            f"'{rd.path}' was written by an older vaezoo (its config has no {', '.join(record.missing)}); "
            "resuming it would mix two versions of its config: start a new run"
        )
    if record.hash != cfg_hash:
        raise VaezooError(f"resume of '{rd.path}' with a different config (hash {cfg_hash[:12]} != saved {record.hash[:12]})")
    ckpt = load_checkpoint(rd.checkpoint) if rd.checkpoint.exists() else None
    if ckpt is not None and ckpt["config_hash"] != cfg_hash:
        raise VaezooError(f"checkpoint in '{rd.path}' belongs to another config")
    return ckpt


def _restore(ckpt: dict, model, optimizer, objective) -> int:
    """Load a checkpoint's states (model, Adam, the estimator's, the global RNG); returns its step."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    objective.load_state_dict(ckpt["objective"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    return int(ckpt["step"])


def _start_tracking(rd: RunDir, cfg_dict: dict, cfg_hash: str, resume: bool, tags: dict, track: bool, uri: str | None,
                    fallback: str | None = None, ds: Dataset | None = None):
    """The run's tracker (the same MLflow run on resume; a new one, with the params and the metrics so far,
    for a run that has none in the store), made off the critical path (``tracking.DeferredTracker``: training
    starts while MLflow loads); config.json written now, run.json now and again with the MLflow run's id."""
    tags = {**tags, "run_dir": str(rd.path.resolve())}
    if not resume or not rd.read_run():
        save_json(rd.config, {"config": cfg_dict, "config_hash": cfg_hash})
    save_json(rd.run, {"tags": tags, "mlflow_run_id": None, "tracking_uri": None})

    def make():
        tracker = tracking.start_training(track, rd.path, rd.path.name, tracking.training_params(cfg_dict, cfg_hash),
                                          tags, uri, fallback)
        tracker.set_tags(tags)
        save_json(rd.run, {"tags": tags, "mlflow_run_id": tracker.run_id, "tracking_uri": tracker.uri})
        if ds is not None:
            ui.present_training(tracker, cfg_dict, cfg_hash, ds, git_state()["git_sha"])
        return tracker

    if not track:
        return make()
    tracking.require_mlflow()  # refused before any step, as is a folder another live process trains
    tracking.check_owner(rd.path)
    return tracking.DeferredTracker(make, rd.path)


def _said_warnings(cfg: TrainConfig) -> dict:
    """What the config allowed although it is known to be wrong: said on stderr, returned as run tags (so run.json
    and the MLflow run keep it)."""
    warned = cfg.warnings()
    for text in warned.values():
        print(f"warning: {text}", file=sys.stderr)
    return warned


class TermWindow:
    """The per-step terms (bound, loss, KL, ...) since the last log line. They stay on the device and are
    checked in one transfer before anything is logged, evaluated or checkpointed, so a GPU is not
    synchronised every step."""

    def __init__(self, world: distributed.World | None = None) -> None:
        self.pending: list[torch.Tensor] = []
        self.names: list[str] = []
        self.values: dict[str, list[float]] = {}
        self.world = world  # data-parallel: the terms are averaged over ranks (the global batch's means)

    def add(self, out) -> None:
        self.names = ["bound", "loss", *out.terms]
        self.pending.append(torch.stack([out.bound.detach(), out.loss.detach(), *out.terms.values()]).float())

    def check(self, done: int) -> None:
        """Move the pending terms to the host; a NaN or inf stops training, naming its term and step (the caller
        adds what the run keeps)."""
        values = torch.stack(self.pending)
        values = (values if self.world is None else self.world.average(values)).cpu()
        first = done - len(self.pending) + 1
        self.pending = []
        finite = torch.isfinite(values)
        if not finite.all():
            row, col = map(int, (~finite).nonzero()[0])
            raise TrainingDiverged(
                f"non-finite '{self.names[col]}' ({float(values[row, col])}) at step {first + row}; training stopped"
            )
        for name, column in zip(self.names, values.T.tolist()):
            self.values.setdefault(name, []).extend(column)

    def log_row(self, batch_size: int, seconds: float) -> dict:
        """Window means of the terms (the loss is -bound or a surrogate: not logged) and the speed; then empty."""
        row = {f"train_{k}": sum(v) / len(v) for k, v in self.values.items() if k != "loss"}
        row["samples_per_s"] = batch_size * len(self.values["bound"]) / seconds
        self.values = {}
        return row


@dataclass
class Setup:
    """What a run works with once its checks passed; ``checkpoint_step``: the step of the checkpoint on disk
    (None while there is none)."""

    device: torch.device
    ds: Dataset
    model: torch.nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer
    x_test: torch.Tensor
    start: int
    checkpoint_step: int | None
    replica: distributed.Replica | None = None  # data-parallel training: this rank's DDP replica


def _check_before_loading(cfg: TrainConfig, device: torch.device) -> None:
    """Refuse what is known without the data: a batch larger than the training set, a step larger than the memory
    the device has."""
    check_batch_fits(cfg.batch_size, train_size(cfg.data), cfg.data.name)
    footprint = Footprint.of(cfg.model)
    need = footprint.training_bytes(cfg.batch_size, cfg.objective.k, eval_rows(cfg.eval_k, 0, device))
    check_fits(need, device, f"a training step (batch {cfg.batch_size} x K {cfg.objective.k}, {footprint.params:,} parameters)",
               "lower the batch size, K or the model's sizes")


def _prepare(cfg: TrainConfig, rd: RunDir, resume: bool, cfg_hash: str) -> Setup:
    """Every check, then the data, model, objective and optimizer (restored on resume); nothing written yet."""
    if resume:
        ckpt = _checked_resume(rd, cfg_hash)
    elif rd.path.exists() and any(rd.path.iterdir()):
        raise VaezooError(f"run directory '{rd.path}' already exists; pass --resume to continue it, or choose another")
    else:
        ckpt = None
    device = resolve_device(cfg.device)
    _check_before_loading(cfg, device)
    set_determinism(cfg.deterministic)
    ds = load_dataset(cfg.data)
    model, objective, optimizer = build(cfg, ds, device)
    x_test = eval_binarized(ds.test, cfg.data.binarize).to(device)
    start = _restore(ckpt, model, optimizer, objective) if ckpt is not None else 0
    return Setup(device, ds, model, objective, optimizer, x_test, start, start if ckpt is not None else None)


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    track: bool = True,
    tracking_uri: str | None = None,
    tracking_fallback: str | None = None,
    progress: bool = True,
    world: distributed.World | None = None,
    observe: Observer | None = None,
) -> dict:
    """Train (or resume) a run; returns the final metrics. Raises VaezooError on bad input, before any work and
    before the run folder is made; a fresh start that fails before its first checkpoint removes what it wrote.
    ``world``: this rank of a data-parallel job whose process group is up (``vaezoo.training.distributed``);
    every rank checks and prepares, then trains, and rank 0 alone writes (the others return {}).
    ``observe``: called at every evaluation (``eval_every``) as ``observe(step, model, test_metrics)``; returning
    True stops the run there (early stopping), checkpointed, with ``final.json`` at that step. For in-process
    callers (the studies' snapshots and early stopping); it must not change the model."""
    if observe is not None and world is not None:
        raise VaezooError("observe is for single-process runs; a data-parallel run cannot stop at one rank's say")
    rd = RunDir(Path(run_dir))
    cfg_dict = cfg.to_dict()
    cfg_hash = config_hash(cfg_dict)  # cfg does not change during the run: hashed once
    def prepare() -> Setup:
        if track and (world is None or world.writes):  # before any work: an unreachable server is refused in seconds
            tracking.refuse_unreachable(tracking_uri, tracking_fallback)
        return _prepare(cfg, rd, resume, cfg_hash)

    if world is None:
        setup = prepare()
    else:  # every rank's checks pass before rank 0 writes anything
        setup = world.agree(prepare)
        setup.replica = distributed.replicate(setup.model, setup.objective, world)
        if not world.writes:
            _run_steps(cfg, rd, setup, tracking.start(False, rd.path.name), cfg_dict, cfg_hash, False)
            return {}
    mark("prepared")
    skip_through = 0
    if resume:
        rd.remove_stale_temp_files()  # left by a kill during a write; the checkpoint itself was checked above
        skip_through = journal.rewind(rd.metrics, setup.start)  # keeps the lines MLflow may hold
    made_folder = not rd.path.exists()
    make_dir(rd.path, "run directory")
    try:
        tags = {**provenance(setup.device, cfg.seed), **_said_warnings(cfg), **distributed.tags(world, setup.device)}
        tracker = _start_tracking(rd, cfg_dict, cfg_hash, resume, tags, track, tracking_uri, tracking_fallback, setup.ds)
        mark("tracking")
        last_eval, last_step = _run_steps(cfg, rd, setup, tracker, cfg_dict, cfg_hash, progress, skip_through, observe)
    except BaseException as exc:
        left = _what_failure_leaves(rd, setup, resume, made_folder)
        if isinstance(exc, VaezooError):
            raise type(exc)(f"{exc}; {left}") from None
        raise
    return _finish(rd, tracker, setup.model, setup.x_test, cfg, setup.device, last_eval, last_step)


def _what_failure_leaves(rd: RunDir, setup: Setup, resume: bool, made_folder: bool) -> str:
    """Keep a run that has a checkpoint; a fresh start without one wrote nothing worth keeping, so its files go.
    Returns what is true afterwards, for the error message."""
    if setup.checkpoint_step is not None:
        return f"the last good checkpoint (step {setup.checkpoint_step}) is kept in '{rd.path}'"
    if resume:
        return f"'{rd.path}' has no checkpoint yet, so a resume starts again from step 0"
    rd.remove_outputs(made_folder)
    where = f"the run folder '{rd.path}' was removed" if made_folder else f"the files it wrote in '{rd.path}' were removed"
    return f"no checkpoint had been written, so {where}"


def _run_steps(cfg: TrainConfig, rd: RunDir, setup: Setup, tracker, cfg_dict: dict, cfg_hash: str, progress: bool,
               skip_through: int = 0, observe: Observer | None = None) -> tuple[dict, int]:
    """The steps from ``setup.start`` to the end (or to the step ``observe`` stops at), with logging, evaluation
    and checkpoints; returns the last evaluation and the last step taken. The tracker is ended as FAILED if a step raises. Metrics of steps up to ``skip_through`` are
    not written again (a resumed run keeps the lines MLflow may hold: ``vaezoo.tracking.journal``). A
    data-parallel rank other than 0 takes the same steps and checks the same terms, and writes, evaluates and
    checkpoints nothing."""
    model, objective, optimizer, device, ds = setup.model, setup.objective, setup.optimizer, setup.device, setup.ds
    replica = setup.replica
    writes = replica is None or replica.world.writes

    def checkpoint(step: int) -> None:
        # a checkpointed run is one MLflow knows: the tracker, started beside the first steps, is waited for here
        if isinstance(tracker, tracking.DeferredTracker):
            tracker.ready()
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "objective": objective.state_dict()}
        save_checkpoint(rd.checkpoint, {"step": step, "config": cfg_dict, "config_hash": cfg_hash, **state,
                                        "rng": {"torch": torch.get_rng_state()}})
        setup.checkpoint_step = step

    data_gen = torch.Generator()
    noise_gen = torch.Generator(device=device)
    bar = progress_bar(progress, cfg.steps, setup.start, unit="step")
    terms = TermWindow(None if replica is None else replica.world)
    last_eval: dict = {}
    done = setup.start
    metrics_fh = journal.MetricsLog(rd.metrics, skip_through) if writes else None
    status = "FAILED"
    try:
        mark("steps_begin")
        t0 = time.perf_counter()
        model.train()
        for step in range(setup.start, cfg.steps):
            idx = batch_indices(len(ds.train), cfg.batch_size, step, cfg.seed)
            data_gen.manual_seed(step_seed(cfg.seed, step, 1))
            noise_gen.manual_seed(step_seed(cfg.seed, step, 2))
            x = binarize_batch(ds.train[idx], cfg.data.binarize, data_gen).to(device, non_blocking=True)
            objective.set_step(step)  # the KL schedule's beta; it and the KL penalised are logged beside the bound
            _set_lr(optimizer, cfg, step)
            out = take_step(model, objective, optimizer, x, noise_gen, replica)
            terms.add(out)
            done = step + 1
            due_log, due_eval, due_checkpoint = (
                done == cfg.steps or done % every == 0 for every in (cfg.log_every, cfg.eval_every, cfg.checkpoint_every)
            )
            if due_log or due_eval or due_checkpoint:
                terms.check(done)
            if not writes:
                terms.values = {}  # checked, as on rank 0; rank 0 logs them
                continue
            if due_log:
                row = terms.log_row(cfg.batch_size, time.perf_counter() - t0)
                _emit(metrics_fh, tracker, done, row)
                t0 = time.perf_counter()
                bar.set_postfix(bound=f"{row['train_bound']:.2f}")
            if due_eval:
                last_eval, stop = _evaluate(model, setup.x_test, cfg, device, done, observe)
                _emit(metrics_fh, tracker, done, last_eval)
                t0 = time.perf_counter()
                if stop:
                    metrics_fh.flush()
                    checkpoint(done)
                    bar.update(1)
                    break
            if due_checkpoint:
                metrics_fh.flush()
                checkpoint(done)
            bar.update(1)
        mark("steps_end")
        status = "FINISHED"
    finally:
        bar.close()
        if metrics_fh is not None:
            metrics_fh.close()
        tracker.flush()
        if status == "FAILED":
            tracker.end("FAILED")
    return last_eval, done


def _set_lr(optimizer, cfg: TrainConfig, step: int) -> None:
    """The learning-rate schedule, read from the step like the data order (so a resume follows it exactly)."""
    if cfg.optim.milestones:
        for group in optimizer.param_groups:
            group["lr"] = cfg.optim.lr_at(step)


def take_step(model, objective, optimizer, x: torch.Tensor, noise_gen: torch.Generator, replica=None):
    """One optimizer step on batch ``x``; data-parallel: this rank's rows of the global batch, gradients averaged
    over ranks. The loop's step, also what the batch-size study's calibration times."""
    if replica is not None:
        return distributed.ddp_step(replica, optimizer, replica.world.rows(x), noise_gen)
    out = objective(model, x, noise_gen)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()
    return out


def _evaluate(model, x_test, cfg: TrainConfig, device, step: int, observe: Observer | None) -> tuple[dict, bool]:
    """The periodic test evaluation, then the caller's observer: (metrics, whether it asked to stop)."""
    mark("periodic_eval_begin")
    metrics = evaluate_during_training(model, x_test, cfg, device)
    mark("periodic_eval_end")
    stop = bool(observe(step, model, metrics)) if observe is not None else False
    model.train()
    return metrics, stop


def _finish(rd: RunDir, tracker, model, x_test, cfg: TrainConfig, device, last_eval: dict, last_step: int) -> dict:
    """Final metrics, sample grids and artifacts of a finished run."""
    mark("eval_begin")  # a run whose last step evaluated (the usual case) evaluates nothing more here
    final = {"step": last_step, **(last_eval or evaluate_during_training(model, x_test, cfg, device))}
    mark("eval_end")
    save_json(rd.final, final)
    grids = write_sample_grids(model.eval(), x_test, 64, rd.path / "samples.png", seed=cfg.seed)
    for path in (rd.config, rd.metrics, rd.final, rd.run, *grids):
        tracker.log_artifact(path)
    tracker.log_artifact(rd.checkpoint, "checkpoint")
    rd.remove_stale_temp_files()  # a finished run leaves only its files, whatever killed writes came before
    tracker.end("FINISHED")
    mark("finished")
    return final


def _emit(fh, tracker, step: int, row: dict) -> None:
    if fh.write(step, row):
        tracker.log_metrics(row, step)


__all__ = ["train", "build", "step_seed", "take_step", "evaluate_during_training"]
