"""The batch-size study: its stated learning-rate rule, step budgets that follow from a calibration alone, and the
tiny preset's direction on fixed seeds (at equal epochs a large batch takes too few steps)."""

from __future__ import annotations

import math

import pytest

from vaezoo.core.errors import VaezooError
from vaezoo.studies import batch_size as bs
from vaezoo.studies.runner import run_study


def test_lr_rule_is_square_root_scaling_from_the_reference_and_capped():
    assert bs.lr_for(bs.B_REF) == bs.LR_REF
    assert bs.lr_for(4 * bs.B_REF) == pytest.approx(2 * bs.LR_REF)  # sqrt, not linear
    assert bs.lr_for(bs.B_REF // 4) == pytest.approx(bs.LR_REF / 2)
    assert bs.lr_for(1) == pytest.approx(bs.LR_REF / math.sqrt(bs.B_REF))
    assert bs.lr_for(1152) == pytest.approx(bs.LR_CAP)  # 3x the reference: where the cap starts to bind
    assert bs.lr_for(10**6) == bs.LR_CAP
    with pytest.raises(VaezooError):
        bs.lr_for(0)


def test_step_budgets_come_from_the_calibration_only():
    cal = {"1": 0.001, "64": 0.002, "1024": 0.008}
    assert bs.step_budgets(cal, 4.0) == {"1": 4000, "64": 2000, "1024": 500}
    assert bs.step_budgets(cal, 4.0) == bs.step_budgets(dict(cal), 4.0)  # a pure function: no timing inside
    assert bs.step_budgets({"8": 10.0}, 1.0) == {"8": 1}  # at least one step
    with pytest.raises(VaezooError):
        bs.step_budgets({"8": 0.0}, 1.0)
    # equal epochs drop the last partial batch, as training does; the full batch is one step an epoch
    assert bs.epoch_steps(10, 1024, 1438) == 10 and bs.epoch_steps(10, 64, 1438) == 220


def test_batch_sizes_resolve_full_and_cap_at_the_training_set():
    assert bs.batch_sizes({"batch_sizes": (1, 128, 1024, 4096, "full")}, 1438) == [1, 128, 1024, 1438]
    with pytest.raises(VaezooError, match="reference"):
        bs.batch_sizes({"batch_sizes": (1, 64)}, 1438)
    with pytest.raises(VaezooError):
        bs.batch_sizes({"batch_sizes": ("half", 128)}, 1438)


def test_first_reach_and_the_log_interval():
    trace = [[10, -40.0], [20, -30.0], [30, -29.0]]
    assert bs.first_reach(trace, -30.0) == 20 and bs.first_reach(trace, -20.0) is None
    band = bs.log_interval([100.0, 1000.0, 10000.0])
    assert band["mean"] == pytest.approx(1000.0) and 0 < band["lo"] < 100 < 10000 < band["hi"]


def test_tiny_equal_epochs_favour_the_small_batch_and_budgets_follow_the_fixed_calibration(tmp_path):
    record = run_study("batch-size", "tiny", tmp_path / "out", workers=2, track=False)
    params, numbers, jobs = record["params"], record["numbers"], record["jobs"]
    cal = params["calibration"]["sec_per_step"]
    assert params["steps_time"] == {b: round(params["seconds"] / cal[b]) for b in cal}
    for s in (0, 1, 2):  # on every seed, 5 epochs at B = 512 (10 steps) is far behind B = 64 (110 steps)
        assert jobs[f"epochs-b64/seed{s}"]["test_elbo"] > jobs[f"epochs-b512/seed{s}"]["test_elbo"] + 5
        assert jobs[f"time-b512/seed{s}"]["steps"] == params["steps_time"]["512"]
        assert jobs[f"epochs-b512/seed{s}"]["lr"] == pytest.approx(2e-3)
    assert numbers["judged"]["epochs"]["direction"]["512"] == "above"
    assert all(math.isfinite(x["value"]) and x["value"] > 0 for x in numbers["b_simple"]["per_seed"])
    assert record["verdict"] in ("holds", "does not hold", "depends")
    assert {"bound_vs_batch.png", "curves.png", "report.md"} <= {p.name for p in (tmp_path / "out").iterdir()}
