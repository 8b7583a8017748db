"""MLflow: a train run lands in the store with params, metrics and tags; tracking off needs no mlflow."""

from __future__ import annotations

import builtins
import importlib.util
import json
import sys

import pytest

from vaezoo.core.errors import VaezooError
from vaezoo.training.config import resolve_config
from vaezoo.training.loop import train

CFG = {"model": {"hidden": [32], "latent_dim": 4}, "data": {"name": "digits"}, "batch_size": 32, "steps": 30,
       "eval_every": 30, "checkpoint_every": 30, "log_every": 10, "eval_k": 4}


def test_train_run_lands_in_the_local_store(tmp_path):
    from mlflow.tracking import MlflowClient

    from vaezoo.tracking import tracking_uri

    train(resolve_config(CFG, (1, 8, 8)), tmp_path / "r", track=True, progress=False)
    run_id = json.loads((tmp_path / "r" / "run.json").read_text())["mlflow_run_id"]
    uri = tracking_uri()
    assert uri.startswith("sqlite:///") and str(tmp_path / "mlruns" / "mlflow.db") in uri
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.latent_dim"] == "4" and run.data.params["objective.bound"] == "elbo"
    assert "config_hash" in run.data.params
    assert {"train_bound", "train_kl", "test_elbo", "test_iwae_k4"} <= set(run.data.metrics)
    history = MlflowClient(uri).get_metric_history(run_id, "train_bound")
    assert [m.step for m in history] == [10, 20, 30]
    for tag in ("git_sha", "git_dirty", "version.torch", "version.numpy", "device_name", "cpu_model", "torch_threads",
                "seed", "deterministic_algorithms"):
        assert tag in run.data.tags
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(run_id)}
    assert {"config.json", "metrics.jsonl", "final.json", "checkpoint", "samples.png", "samples-recon.png"} <= artifacts
    assert run.info.artifact_uri.startswith((tmp_path / "mlruns" / "artifacts").as_uri())


def test_missing_mlflow_names_the_fix(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *args, **kwargs)

    real_find_spec = importlib.util.find_spec

    def no_mlflow_spec(name, *args, **kwargs):  # what an install without mlflow finds
        return None if name == "mlflow" else real_find_spec(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    monkeypatch.setattr(importlib.util, "find_spec", no_mlflow_spec)
    with pytest.raises(VaezooError, match="pip install mlflow.*--no-track"):
        train(resolve_config(CFG, (1, 8, 8)), tmp_path / "r", track=True, progress=False)
    # tracking off works without mlflow
    train(resolve_config(CFG, (1, 8, 8)), tmp_path / "r2", track=False, progress=False)
