"""A run directory and its checkpoint: what a training run leaves behind, and how it is read back.

Run directory:
  config.json      the resolved config and its sha256 ("config_hash")
  checkpoint.pt    the latest checkpoint (atomic; tensors and plain data only)
  metrics.jsonl    one JSON line per log or eval event (its step, timestamp and metrics): the source of truth
  mlflow-sync.json how much of metrics.jsonl MLflow holds, and the process that owns the run (vaezoo.tracking.journal)
  final.json       the final metrics
  samples.png      64 prior samples; samples-recon.png: test images and their reconstructions
  run.json         provenance tags and the MLflow run id

A checkpoint holds the model, the optimizer, the estimator's state (the score baseline), the step, the RNG
state and the resolved config with its hash; ``torch.load(weights_only=True)`` reads it. The data order and
the latent noise at step t are pure functions of (seed, t) (``vaezoo.training.loop.step_seed``), so the step
pins both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vaezoo.core.configs import Recorded, load_recorded, read_json_object
from vaezoo.core.errors import VaezooError
from vaezoo.core.io import atomic_write, stale_temp_files
from vaezoo.models import build_model
from vaezoo.tracking.provenance import resolve_device
from vaezoo.training.config import TrainConfig

FORMAT = "vaezoo-checkpoint-1"


def save_checkpoint(path: str | Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise VaezooError(f"no checkpoint at '{path}'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise VaezooError(f"checkpoint '{path}' is corrupt or not a vaezoo checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise VaezooError(f"checkpoint '{path}' is not a vaezoo checkpoint (format {FORMAT} expected)")
    return state


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

    @property
    def outputs(self) -> tuple[Path, ...]:
        """Every file a run writes here (``samples*.png`` by vaezoo.training.samples, eval.json by ``vaezoo eval``)."""
        names = ("samples.png", "samples-recon.png", "eval.json", "mlflow-sync.json")  # the last: vaezoo.tracking.journal
        return (self.config, self.checkpoint, self.metrics, self.final, self.run, *(self.path / n for n in names))

    def remove_stale_temp_files(self) -> list[Path]:
        """Remove the temp files that interrupted atomic writes of this run's files left (a kill during a
        checkpoint write leaves ``.checkpoint.pt.XXXXXXXX.tmp``); nothing else is touched. Returns them."""
        stale = [tmp for out in self.outputs for tmp in stale_temp_files(out)]
        for tmp in stale:
            tmp.unlink(missing_ok=True)
        return stale

    def remove_outputs(self, made_folder: bool) -> None:
        """Undo a start that wrote nothing worth keeping: this run's files, then the folder if this start made it
        and nothing else is in it."""
        self.remove_stale_temp_files()
        for out in self.outputs:
            out.unlink(missing_ok=True)
        if made_folder and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

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
