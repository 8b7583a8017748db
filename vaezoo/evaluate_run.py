"""``vaezoo eval RUN``: evaluate a run's checkpoint on its test set, write JSON, log an MLflow run."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from vaezoo import tracking
from vaezoo.config import save_json
from vaezoo.data import eval_binarized, load_dataset
from vaezoo.errors import VaezooError
from vaezoo.evaluate import evaluate
from vaezoo.provenance import provenance
from vaezoo.train import RunDir, load_run


def evaluate_run(run, *, k=64, is_samples=5000, max_test=None, seed=0, device="cpu", out=None,
                 track=True, tracking_uri=None) -> tuple[dict, Path]:
    rd = RunDir(Path(run))
    model, record = load_run(rd.path, device)
    cfg, recorded_hash = record.cfg, record.hash  # the run's own hash, as its checkpoints carry it
    ds = load_dataset(cfg.data)
    x = eval_binarized(ds.test, cfg.data.binarize)
    if max_test is not None:
        if max_test <= 0:
            raise VaezooError(f"--max-test must be > 0, got {max_test}")
        x = x[:max_test]
    t0 = time.perf_counter()
    report = evaluate(model, x, k=k, is_samples=is_samples, seed=seed)
    report["eval_seconds"] = round(time.perf_counter() - t0, 2)
    report["config_hash"] = recorded_hash
    report["dataset"] = cfg.data.name
    if ds.truth is not None:  # linear-Gaussian: the exact answer is known
        report["log_px_true"] = float(ds.truth.log_marginal(x).mean())
    path = Path(out) if out else rd.path / "eval.json"
    save_json(path, report)
    tracker = tracking.start(track, f"eval-{rd.path.name}", tracking_uri)
    tracker.log_params({"run_dir": str(rd.path.resolve()), "k": k, "is_samples": is_samples, "seed": seed,
                        "max_test": max_test, "config_hash": recorded_hash})
    tracker.set_tags({**provenance(torch.device(device), seed), "vaezoo.train_run_id": rd.read_run().get("mlflow_run_id", "")})
    tracker.log_metrics({k2: v for k2, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}, 0)
    tracker.log_artifact(path)
    tracker.end()
    return report, path
