"""Shared fixtures: small models, the linear-Gaussian truth, gradient draws, a CLI runner."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _isolate_store(tmp_path, monkeypatch):
    """Each test gets its own MLflow store and run folders, never the user's ./mlruns."""
    monkeypatch.setenv("VAEZOO_MLRUNS", str(tmp_path / "mlruns"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def truth():
    from vaezoo.data.linear_gaussian import LinearGaussian

    return LinearGaussian.default()
