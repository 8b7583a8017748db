"""KL schedules and free bits: the factors their papers define, a config that round-trips through JSON, a loss that
changes while the logged bound stays the true ELBO, the effective beta and the KL penalised in metrics.jsonl, and bad
input refused by the real command in one line before anything is written."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from vaezoo.core.configs import from_dict, to_dict
from vaezoo.core.errors import VaezooError
from vaezoo.models.distributions import DiagonalGaussian
from vaezoo.objectives import Objective, ObjectiveConfig
from vaezoo.objectives.schedules import KLSchedule, penalised_kl


def test_linear_warmup_rises_from_zero_to_one_and_stays():
    s = KLSchedule("linear", warmup_steps=200)
    assert [s.factor(t) for t in (0, 50, 100, 200, 10_000)] == [0.0, 0.25, 0.5, 1.0, 1.0]


def test_cyclical_repeats_a_ramp_then_holds_each_period():
    s = KLSchedule("cyclical", period=100, ramp=0.5)
    assert [s.factor(t) for t in (0, 25, 50, 99, 100, 125, 150, 200, 250)] == [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 0.0, 1.0]
    assert KLSchedule().factor(0) == KLSchedule().factor(10**6) == 1.0


def test_objective_config_with_a_schedule_round_trips_through_json():
    cfg = ObjectiveConfig(beta=2.0, schedule=KLSchedule("cyclical", period=400, ramp=0.25), free_bits=0.5)
    back = from_dict(ObjectiveConfig, json.loads(json.dumps(to_dict(cfg))))
    assert back == cfg and isinstance(back.schedule, KLSchedule)


def test_free_bits_floor_each_units_batch_mean_and_stop_its_gradient():
    g = torch.Generator().manual_seed(0)
    mu = (torch.randn(16, 4, generator=g) * torch.tensor([0.05, 2.0, 0.1, 1.5])).requires_grad_()
    q = DiagonalGaussian(mu, torch.full((16, 4), 0.9))
    kl_u = q.kl_per_unit()
    lam = 0.3
    pen = penalised_kl(kl_u, lam)
    mean_u = kl_u.detach().mean(0)
    assert float(pen.detach().mean()) == pytest.approx(float(torch.clamp(mean_u, min=lam).sum()), rel=1e-6)
    pen.mean().backward()
    below = mean_u < lam
    assert below.tolist() == [True, False, True, False]  # the test's own set-up: two units on each side
    assert torch.all(mu.grad[:, below] == 0)
    assert torch.allclose(mu.grad[:, ~below], mu.detach()[:, ~below] / 16)  # d(mean KL)/d mu = mu / B
    assert torch.equal(penalised_kl(kl_u, 0.0), kl_u.sum(-1))


@pytest.mark.parametrize("estimator", ["reparam", "score"])
def test_schedule_and_free_bits_change_the_loss_never_the_logged_bound(estimator):
    from vaezoo.models import get_model

    torch.manual_seed(0)
    model = get_model("vae", hidden=(16,), latent_dim=4, input_shape=(1, 4, 4))
    x = (torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    plain = Objective(ObjectiveConfig(estimator=estimator, kl="analytic"))
    warm = Objective(ObjectiveConfig(estimator=estimator, kl="analytic", free_bits=0.5,
                                     schedule=KLSchedule("linear", warmup_steps=10)))
    warm.set_step(3)
    a, b = (obj(model, x, torch.Generator().manual_seed(2)) for obj in (plain, warm))
    assert torch.equal(a.bound, b.bound) and torch.equal(a.terms["kl"], b.terms["kl"])  # the true ELBO and KL
    assert float(b.terms["beta"]) == pytest.approx(0.3) and float(a.terms["beta"]) == 1.0
    assert float(b.terms["kl_penalised"]) >= float(b.terms["kl"]) and float(a.terms["kl_penalised"]) == float(a.terms["kl"])
    if estimator == "reparam":  # loss = -(recon - beta x KL penalised), recon = bound + KL
        recon = b.bound + b.terms["kl"]
        assert float(b.loss) == pytest.approx(float(-(recon - 0.3 * b.terms["kl_penalised"])), rel=1e-5)


def test_training_logs_the_effective_beta_and_the_kl_penalised_beside_the_bound(tmp_path):
    from vaezoo.training.config import resolve_config
    from vaezoo.training.loop import train

    user = {"model": {"hidden": [32], "latent_dim": 4}, "data": {"name": "digits"}, "batch_size": 32, "steps": 60,
            "eval_every": 60, "checkpoint_every": 60, "log_every": 10, "optim": {"fused": False},
            "objective": {"beta": 2.0, "free_bits": 0.2, "schedule": {"name": "linear", "warmup_steps": 40}}}
    train(resolve_config(user, (1, 8, 8)), tmp_path / "r", track=False, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "train_beta" in r]
    # window means of beta_t = 2 min(1, t/40) over steps t = 10w .. 10w + 9
    assert [round(r["train_beta"], 6) for r in rows] == [0.225, 0.725, 1.225, 1.725, 2.0, 2.0]
    assert all(r["train_kl_penalised"] >= r["train_kl"] - 1e-6 and r["train_kl_penalised"] >= 4 * 0.2 - 1e-6 for r in rows)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["config"]["objective"]
    assert saved["schedule"] == {"name": "linear", "warmup_steps": 40, "period": 0, "ramp": 0.5} and saved["free_bits"] == 0.2


def test_config_refuses_what_no_schedule_or_floor_defines():
    for bad, text in [
        (lambda: KLSchedule("sawtooth"), "unknown KL schedule 'sawtooth'"),
        (lambda: KLSchedule("linear"), "needs warm-up steps > 0"),
        (lambda: KLSchedule("cyclical"), "needs a period > 0"),
        (lambda: KLSchedule("cyclical", period=10, ramp=0.0), "ramp must be in (0, 1]"),
        (lambda: ObjectiveConfig(free_bits=float("inf")), "free bits"),
        (lambda: ObjectiveConfig(bound="iwae", k=4, free_bits=0.1), "defined for the ELBO only"),
        (lambda: ObjectiveConfig(bound="iwae", k=4, schedule=KLSchedule("linear", warmup_steps=5)), "ELBO only"),
        (lambda: ObjectiveConfig(estimator="stl", free_bits=0.1), "free bits need the closed-form KL"),
    ]:
        with pytest.raises(VaezooError, match=re.escape(text)):
            bad()


@pytest.mark.parametrize("args,message", [
    (["--kl-schedule", "sawtooth"], "unknown KL schedule 'sawtooth'; choose from constant, linear, cyclical"),
    (["--free-bits", "-0.5"], "free bits (lambda, nats per latent unit) must be >= 0 and finite, got -0.5"),
    (["--free-bits", "nan"], "must be >= 0 and finite, got nan"),
    (["--kl-schedule", "linear", "--warmup-steps", "-10"], "warm-up steps and period must be >= 0"),
    (["--set", "objective.schedule.warmup_steps=NaN"], "config 'objective.schedule.warmup_steps' must be int"),
])
def test_bad_schedule_input_through_the_real_command_is_one_line_and_writes_nothing(tmp_path, args, message):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "vaezoo.cli", "train", "--dataset", "digits", "--steps", "5", *args,
                           "--run-dir", str(run), "--no-track", "--no-progress"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not run.exists() and list(tmp_path.iterdir()) == []
