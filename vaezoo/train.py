"""The training loop: seeded, checkpointed, resumable to the bit, stopped loudly by NaN or inf.

Run directory:
  config.json      the resolved config and its sha256 ("config_hash")
  checkpoint.pt    the latest checkpoint (atomic; tensors and plain data only)
  metrics.jsonl    one JSON line per log or eval event
  final.json       the final metrics
  samples.png      64 prior samples; samples-recon.png: test images and their reconstructions
  run.json         provenance tags and the MLflow run id
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vaezoo import tracking
from vaezoo.checkpoint import load_checkpoint, save_checkpoint
from vaezoo.config import Recorded, config_hash, load_recorded, read_json_object, save_json
from vaezoo.data import Dataset, batch_indices, binarize_batch, eval_binarized, load_dataset
from vaezoo.errors import TrainingDiverged, VaezooError
from vaezoo.evaluate import bounds_on_test_set
from vaezoo.io import atomic_write_text, make_dir
from vaezoo.models import build_model
from vaezoo.objectives import Objective
from vaezoo.progress import bar as progress_bar
from vaezoo.provenance import provenance, resolve_device, set_determinism
from vaezoo.runconfig import TrainConfig
from vaezoo.sampling import write_sample_grids


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


@dataclass
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def final(self) -> Path:
        return self.path / "final.json"

    @property
    def run(self) -> Path:
        return self.path / "run.json"

    def read_config(self) -> TrainConfig:
        return self.read_config_record().cfg

    def read_config_record(self) -> Recorded:
        """config.json checked against its recorded hash; checkpoints carry that hash (see Recorded)."""
        if not self.config.is_file():
            raise VaezooError(f"'{self.path}' is not a vaezoo run directory (no config.json)")
        data = read_json_object(self.config, "run config")
        if not isinstance(data.get("config"), dict) or not isinstance(data.get("config_hash"), str):
            raise VaezooError(f"run config '{self.config}' lacks its 'config' object or 'config_hash'")
        return load_recorded(TrainConfig, data["config"], data["config_hash"], f"config.json in '{self.path}'")

    def read_run(self) -> dict:
        return read_json_object(self.run, "run record") if self.run.is_file() else {}

    def read_final(self) -> dict:
        return read_json_object(self.final, "final metrics") if self.final.is_file() else {}


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metric lines written after the checkpoint (they will be written again)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def evaluate_during_training(model, x_test, cfg: TrainConfig, device) -> dict:
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    model.eval()
    out = {f"test_{name}": value for name, value in bounds_on_test_set(model, x_test, cfg.eval_k, g).items()}
    model.train()
    return out


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    track: bool = True,
    tracking_uri: str | None = None,
    progress: bool = True,
) -> dict:
    """Train (or resume) a run; returns the final metrics. Raises VaezooError on bad input."""
    rd = RunDir(Path(run_dir))
    cfg_dict = cfg.to_dict()
    cfg_hash = config_hash(cfg_dict)  # cfg does not change during the run: hashed once
    if resume:
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
    elif rd.path.exists() and any(rd.path.iterdir()):
        raise VaezooError(f"run directory '{rd.path}' already exists; pass --resume to continue it, or choose another")
    else:
        ckpt = None

    set_determinism(cfg.deterministic)
    device = resolve_device(cfg.device)
    ds = load_dataset(cfg.data)
    if cfg.batch_size > len(ds.train):
        raise VaezooError(f"batch size {cfg.batch_size} exceeds the {len(ds.train)} training examples of '{ds.name}'")
    model, objective, optimizer = build(cfg, ds, device)
    x_test = eval_binarized(ds.test, cfg.data.binarize).to(device)
    start = 0
    prior = rd.read_run()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        objective.load_state_dict(ckpt["objective"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        start = int(ckpt["step"])
    if resume:
        _truncate_metrics(rd.metrics, start)

    make_dir(rd.path, "run directory")
    tags = provenance(device, cfg.seed)
    tracker = tracking.start(track, rd.path.name, tracking_uri, run_id=prior.get("mlflow_run_id"))
    if not resume or not prior:
        save_json(rd.config, {"config": cfg_dict, "config_hash": cfg_hash})
        tracker.log_params({**tracking.flatten(cfg_dict), "config_hash": cfg_hash})
    tracker.set_tags({**tags, "run_dir": str(rd.path.resolve())})
    save_json(rd.run, {"tags": tags, "mlflow_run_id": tracker.run_id, "tracking_uri": tracker.uri})

    def checkpoint(step: int) -> None:
        save_checkpoint(
            rd.checkpoint,
            {
                "step": step,
                "config": cfg_dict,
                "config_hash": cfg_hash,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "objective": objective.state_dict(),
                "rng": {"torch": torch.get_rng_state()},
            },
        )

    data_gen = torch.Generator()
    noise_gen = torch.Generator(device=device)
    bar = progress_bar(progress, cfg.steps, start, unit="step")
    window: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    last_good = start
    last_eval: dict = {}
    pending: list[torch.Tensor] = []
    metrics_fh = open(rd.metrics, "a")
    status = "FAILED"
    try:
        model.train()
        for step in range(start, cfg.steps):
            idx = batch_indices(len(ds.train), cfg.batch_size, step, cfg.seed)
            data_gen.manual_seed(step_seed(cfg.seed, step, 1))
            noise_gen.manual_seed(step_seed(cfg.seed, step, 2))
            x = binarize_batch(ds.train[idx], cfg.data.binarize, data_gen).to(device, non_blocking=True)
            out = objective(model, x, noise_gen)
            names = ["bound", "loss", *out.terms]
            # terms stay on the device; they are checked in one transfer before anything is logged,
            # evaluated or checkpointed, so a GPU is not synchronised every step
            pending.append(torch.stack([out.bound.detach(), out.loss.detach(), *out.terms.values()]).float())
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            done = step + 1
            log, ev, ck = (done == cfg.steps or done % n == 0 for n in (cfg.log_every, cfg.eval_every, cfg.checkpoint_every))
            if log or ev or ck:
                values = torch.stack(pending).cpu()
                first = done - len(pending) + 1
                pending = []
                finite = torch.isfinite(values)
                if not finite.all():
                    row, col = map(int, (~finite).nonzero()[0])
                    raise TrainingDiverged(
                        f"non-finite '{names[col]}' ({float(values[row, col])}) at step {first + row}; training stopped; "
                        f"the last good checkpoint (step {last_good}) is kept in '{rd.path}'"
                    )
                for name, column in zip(names, values.T.tolist()):
                    window.setdefault(name, []).extend(column)
            if log:
                row = {f"train_{k}": sum(v) / len(v) for k, v in window.items() if k != "loss"}
                row["samples_per_s"] = cfg.batch_size * len(window["bound"]) / (time.perf_counter() - t0)
                _emit(metrics_fh, tracker, done, row)
                window, t0 = {}, time.perf_counter()
                bar.set_postfix(bound=f"{row['train_bound']:.2f}")
            if ev:
                last_eval = evaluate_during_training(model, x_test, cfg, device)
                _emit(metrics_fh, tracker, done, last_eval)
                t0 = time.perf_counter()
            if ck:
                metrics_fh.flush()
                checkpoint(done)
                last_good = done
            bar.update(1)
        status = "FINISHED"
    finally:
        bar.close()
        metrics_fh.close()
        tracker.flush()
        if status == "FAILED":
            tracker.end("FAILED")
    final = {"step": cfg.steps, **(last_eval or evaluate_during_training(model, x_test, cfg, device))}
    save_json(rd.final, final)
    grids = write_sample_grids(model.eval(), x_test, 64, rd.path / "samples.png", seed=cfg.seed)
    for path in (rd.config, rd.metrics, rd.final, rd.run, *grids):
        tracker.log_artifact(path)
    tracker.log_artifact(rd.checkpoint, "checkpoint")
    tracker.end("FINISHED")
    return final


def _emit(fh, tracker, step: int, row: dict) -> None:
    fh.write(json.dumps({"step": step, **row}) + "\n")
    tracker.log_metrics(row, step)


def load_run(run_dir: str | Path, device: str = "cpu"):
    """(model, Recorded config) from a run directory's checkpoint, on ``device``, in eval mode."""
    rd = RunDir(Path(run_dir))
    record = rd.read_config_record()
    state = load_checkpoint(rd.checkpoint)
    if state["config_hash"] != record.hash:
        raise VaezooError(f"checkpoint in '{rd.path}' does not match its config.json")
    model = build_model(record.cfg.model)
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval(), record


def load_run_model(run_dir: str | Path, device: str = "cpu"):
    """(model, config) from a run directory's checkpoint, on ``device``, in eval mode."""
    model, record = load_run(run_dir, device)
    return model, record.cfg


__all__ = ["train", "build", "load_run", "load_run_model", "RunDir", "step_seed"]
