"""DistributedDataParallel: two CPU processes under gloo average their gradients correctly.

After DDP steps every rank holds the same weights, and they equal one process's weights after the same
steps on the concatenated batch (float64, so Adam's sign-like first update cannot amplify rounding). The
benchmark times ``vaezoo.training.distributed.ddp_step``, the step of ``vaezoo train --ddp``
(tests/test_ddp_training.py trains with it).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vaezoo.bench import ddp, timing
from vaezoo.bench.ddp import DDP_COLUMNS, DDPConfig, ddp_parts, run_ddp
from vaezoo.bench.throughput import PRECISIONS, synthetic_batch, train_config, train_step, vaezoo_parts
from vaezoo.core.errors import VaezooError
from vaezoo.training import distributed

WORLD = 2
BATCH = 8
STEPS = 2
VARIANTS = ("vae", "iwae", "ae")
ROOT = Path(__file__).resolve().parent.parent


def _batch(rank: int) -> torch.Tensor:
    return synthetic_batch(BATCH, torch.device("cpu"), seed=100 + rank).double()


def _snapshot(model: torch.nn.Module) -> dict:
    """Weights after the last step, and that step's gradients (Adam's update hides a gradient's scale)."""
    grads = {f"grad.{n}": p.grad.detach().clone() for n, p in model.named_parameters()}
    return {**model.state_dict(), **grads}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        for variant in VARIANTS:
            parts = ddp_parts(train_config(variant, "mlp", BATCH), _batch(rank), rank, WORLD)
            for _ in range(STEPS):
                parts.step(PRECISIONS["fp32"])
            torch.save(_snapshot(parts.model), os.path.join(out_dir, f"{variant}-rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _single_process(variant: str) -> dict:
    """One process, literally one batch of 2 x BATCH: the ranks kept their rows of the same seeded noise."""
    cfg = train_config(variant, "mlp", BATCH)
    parts = vaezoo_parts(cfg, torch.cat([_batch(r) for r in range(WORLD)]))
    parts.model.double()
    for _ in range(STEPS):
        train_step(parts, PRECISIONS["fp32"], None, parts.generator)
    return _snapshot(parts.model)


def test_two_gloo_processes_match_one_process_on_the_concatenated_batch(tmp_path):
    mp.start_processes(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, start_method="spawn")
    for variant in VARIANTS:
        ranks = [torch.load(tmp_path / f"{variant}-rank{r}.pt", weights_only=True) for r in range(WORLD)]
        reference = _single_process(variant)
        start = vaezoo_parts(train_config(variant, "mlp", BATCH), _batch(0)).model.double().state_dict()
        for name, ref in reference.items():
            assert torch.equal(ranks[0][name], ranks[1][name]), f"{variant}: ranks differ in {name}"
            torch.testing.assert_close(ranks[0][name], ref, rtol=1e-9, atol=1e-10, msg=f"{variant}: {name}")
            if name in start and name.endswith("weight"):
                assert not torch.equal(ref, start[name]), f"{variant}: {name} did not train"


def test_torchrun_benchmark_reports_scaling_efficiency(tmp_path):
    out = tmp_path / "ddp.json"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "-m",
        "vaezoo.bench.ddp",
        "--model",
        "ae",
        "--batch-size",
        "16",
        "--windows",
        "2",
        "--window-s",
        "0.05",
        "--warmup-s",
        "0.05",
        "--out",
        str(out),
        "--out-dir",
        str(tmp_path),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["world_size"] == 2 and summary["backend"] == "gloo"
    assert summary["ddp_samples_per_s"] > 0 and summary["single_samples_per_s"] > 0
    (csv_path,) = tmp_path.glob("ddp-fp32-*.csv")
    reader = csv.DictReader(csv_path.open())
    (row,) = reader
    assert reader.fieldnames == DDP_COLUMNS
    for col in DDP_COLUMNS:  # the CSV says what the JSON says; floats keep 6 significant digits (merge_csv)
        want = summary[col]
        if isinstance(want, float):
            assert float(row[col]) == pytest.approx(want, rel=1e-5), col
        else:
            assert row[col] == str(want), col
    assert "scaling efficiency" in proc.stdout


@pytest.fixture
def world_of_one(tmp_path, monkeypatch):
    """A gloo group of this process alone (as init_distributed makes without torchrun), torn down after."""
    monkeypatch.delenv("RANK", raising=False)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_run_ddp_aggregates_windows_and_scaling_efficiency(world_of_one, monkeypatch):
    """run_ddp's arithmetic on known times: the timers are replaced, so no step runs and nothing is timed."""
    batch, per_window, first = 4, 2, 0.5
    single_rates = [20.0, 12.0, 16.0]  # steps/s of the lone process; median 16
    window_s = iter([0.1, 0.3, 0.2])  # the DDP windows' seconds, in turn
    timed_n = []

    def fake_measure(contenders, *_args, **_kw):
        assert list(contenders) == ["single"]
        return {"single": timing.Windows(rates=list(single_rates))}

    def fake_timed(_step, _device, n):
        timed_n.append(n)
        return next(window_s)

    monkeypatch.setattr(ddp.timing, "measure", fake_measure)
    monkeypatch.setattr(
        ddp.timing, "prepare", lambda *a, **k: timing.Windows(steps_per_window=per_window, first_call_s=first)
    )
    monkeypatch.setattr(ddp.timing, "timed", fake_timed)
    cfg = DDPConfig(model="ae", batch_size=batch, windows=3)
    summary = run_ddp(cfg, 0, 1, torch.device("cpu"))

    assert timed_n == [per_window] * 3  # every window runs the agreed step count
    single = batch * 16.0
    agg = batch * 2 / 0.2  # world 1: median window rate, batch x steps / seconds
    assert summary["single_samples_per_s"] == pytest.approx(single)
    assert summary["ddp_samples_per_s"] == pytest.approx(agg)
    assert summary["ddp_samples_per_s_low"] == pytest.approx(batch * 2 / 0.3)
    assert summary["ddp_samples_per_s_high"] == pytest.approx(batch * 2 / 0.1)
    assert summary["per_process_samples_per_s"] == pytest.approx(agg)
    assert summary["scaling_efficiency"] == pytest.approx(agg / (1 * single))  # 0.625
    assert summary["ddp_first_step_s"] == first and summary["steps_per_window"] == per_window
    assert summary["world_size"] == 1 and summary["backend"] == "gloo"
    assert set(DDP_COLUMNS) <= set(summary)  # every CSV column is in the summary


def test_bad_ddp_input_is_a_clear_error():
    from vaezoo.bench.ddp import main

    assert main(["--batch-size", "0"]) == 2
    assert main(["--precision", "fp8"]) == 2
    assert main(["--model", "nope"]) == 2
    assert main(["--backbone", "resnet"]) == 2
    assert main(["--device", "tpu"]) == 2
    assert main(["--windows", "0"]) == 2
    with pytest.raises(VaezooError, match="unknown backbone 'resnet'"):
        DDPConfig(backbone="resnet")


def test_the_benchmark_times_the_training_step(world_of_one, monkeypatch):
    """run_ddp's timed step is vaezoo.training.distributed.ddp_step (the step of `vaezoo train --ddp`), not a copy."""
    calls = []
    real = distributed.ddp_step

    def counted(*args, **kwargs):
        calls.append(args[2].shape[0])  # the rows it stepped on
        return real(*args, **kwargs)

    def fake_timed(step, _device, n):
        for _ in range(n):
            step()
        return 0.1

    monkeypatch.setattr(distributed, "ddp_step", counted)
    monkeypatch.setattr(ddp.timing, "measure", lambda *a, **k: {"single": timing.Windows(rates=[1.0])})
    monkeypatch.setattr(ddp.timing, "prepare", lambda *a, **k: timing.Windows(steps_per_window=2, first_call_s=0.1))
    monkeypatch.setattr(ddp.timing, "timed", fake_timed)
    run_ddp(DDPConfig(model="vae", batch_size=4, windows=2), 0, 1, torch.device("cpu"))
    assert calls == [4] * 4  # 2 windows x 2 steps, each on this rank's 4 rows
