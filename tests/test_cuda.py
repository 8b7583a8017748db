"""The core on CUDA: training, resume and evaluation run there. Skipped cleanly without a GPU."""

from __future__ import annotations

import pytest
import torch

from vaezoo.models import get_model
from vaezoo.objectives import ESTIMATORS, Objective, ObjectiveConfig
from vaezoo.training.config import resolve_config
from vaezoo.training.evaluate import evaluate
from vaezoo.training.loop import train
from vaezoo.training.rundir import load_checkpoint

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

CFG = {"model": {"hidden": [64], "latent_dim": 8}, "data": {"name": "digits"}, "batch_size": 64, "steps": 60,
       "eval_every": 30, "checkpoint_every": 30, "eval_k": 8, "device": "cuda"}


def stop_after_first_checkpoint(monkeypatch):
    """Make train() die right after writing its first checkpoint, as a killed run would."""
    import vaezoo.training.loop

    real = vaezoo.training.loop.save_checkpoint

    def save_then_die(path, state):
        real(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(vaezoo.training.loop, "save_checkpoint", save_then_die)
    return lambda: monkeypatch.setattr(vaezoo.training.loop, "save_checkpoint", real)


def test_train_and_resume_on_cuda(tmp_path, monkeypatch):
    cfg = resolve_config(CFG, (1, 8, 8))
    final = train(cfg, tmp_path / "a", track=False, progress=False)
    assert torch.isfinite(torch.tensor(final["test_elbo"]))
    state = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    assert state["step"] == 60
    # same seed twice on the same GPU: same weights (these kernels are deterministic at this size)
    train(cfg, tmp_path / "b", track=False, progress=False)
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    assert all(torch.allclose(state["model"][k], b[k], atol=1e-6) for k in b)
    # killed after its step-30 checkpoint, then resumed: ends where the uninterrupted run ended
    restore = stop_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "c", track=False, progress=False)
    restore()
    assert load_checkpoint(tmp_path / "c" / "checkpoint.pt")["step"] == 30
    train(cfg, tmp_path / "c", resume=True, track=False, progress=False)
    c = load_checkpoint(tmp_path / "c" / "checkpoint.pt")["model"]
    assert all(torch.allclose(state["model"][k], c[k], atol=1e-6) for k in c)


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_every_estimator_runs_on_cuda(estimator):
    model = get_model("vae", hidden=(32,), latent_dim=4, input_shape=(1, 8, 8)).cuda()
    bound = "iwae" if estimator == "dreg" else "elbo"
    obj = Objective(ObjectiveConfig(bound=bound, k=3, estimator=estimator))
    x = torch.rand(16, 1, 8, 8, device="cuda").bernoulli()
    out = obj(model, x, torch.Generator(device="cuda").manual_seed(0))
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_evaluate_on_cuda_matches_cpu_within_monte_carlo_error():
    torch.manual_seed(0)
    model = get_model("vae", hidden=(32,), latent_dim=4, input_shape=(1, 8, 8))
    x = torch.rand(40, 1, 8, 8).bernoulli()
    cpu = evaluate(model, x, k=8, is_samples=2000)
    gpu = evaluate(model.cuda(), x, k=8, is_samples=2000)
    assert abs(cpu["ll_is"] - gpu["ll_is"]) < 6 * (cpu["ll_is_mc_se"] + gpu["ll_is_mc_se"]) + 0.05
    assert cpu["active_units"] == gpu["active_units"]
