"""The memory estimate of a step bounds what a real step allocates (measured with torch's profiler), without being
vacuous; a step beyond what the device holds is refused with both figures."""

from __future__ import annotations

import pytest
import torch

from vaezoo.core.errors import VaezooError
from vaezoo.gradnoise.memory import peak_bytes
from vaezoo.models import build_model
from vaezoo.objectives import Objective
from vaezoo.training import footprint
from vaezoo.training.config import resolve_config
from vaezoo.training.evaluate import bounds_on_test_set
from vaezoo.training.footprint import FLOAT_BYTES, Footprint

STEPS = [
    ({"model": {"name": "iwae"}, "objective": {"k": 50, "estimator": "dreg"}, "batch_size": 16}),
    ({"model": {"name": "vae"}, "objective": {"k": 20, "estimator": "stl", "kl": "mc"}, "batch_size": 16}),
    ({"model": {"name": "vae"}, "objective": {"k": 20, "estimator": "score"}, "batch_size": 16}),
    ({"model": {"name": "iwae", "backbone": "conv"}, "objective": {"k": 10, "estimator": "dreg"}, "batch_size": 8}),
    ({"model": {"name": "vae", "backbone": "conv", "likelihood": "gaussian", "learn_sigma": "pixel"},
      "objective": {"k": 10, "kl": "mc"}, "batch_size": 8}),
    ({"model": {"name": "vae", "backbone": "linear"}, "objective": {"k": 20}, "batch_size": 32}),
    ({"model": {"name": "ae"}, "batch_size": 128}),
]


@pytest.mark.parametrize("user", STEPS, ids=lambda u: f"{u['model']['name']}-{u['model'].get('backbone', 'mlp')}")
def test_the_estimate_bounds_a_real_first_training_step(user):
    torch.set_num_threads(1)  # the profiler's memory events in one order (see vaezoo.gradnoise.memory)
    cfg = resolve_config(user, (1, 28, 28))
    fp = Footprint.of(cfg.model)
    model = build_model(cfg.model)
    assert fp.params == sum(p.numel() for p in model.parameters())
    objective, optimizer = Objective(cfg.objective), torch.optim.Adam(model.parameters(), fused=True)
    x = torch.rand(cfg.batch_size, *cfg.model.input_shape, generator=torch.Generator().manual_seed(0)).bernoulli()
    g = torch.Generator().manual_seed(0)

    def step():  # the first step also makes the gradients and Adam's moments
        out = objective(model, x, g)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    measured = FLOAT_BYTES * fp.params + peak_bytes(step)  # the weights were there before the step
    estimate = fp.training_bytes(cfg.batch_size, cfg.objective.k, eval_rows=0)
    assert measured <= estimate <= 4 * measured, (measured, estimate)


@pytest.mark.parametrize("backbone", ["mlp", "conv"])
def test_the_estimate_bounds_an_evaluation_without_autograd(backbone):
    torch.set_num_threads(1)
    cfg = resolve_config({"model": {"backbone": backbone}}, (1, 28, 28))
    fp, model = Footprint.of(cfg.model), build_model(cfg.model).eval()
    x = torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(0)).bernoulli()
    k = 32  # 20 datapoints x 32 samples in one batch
    measured = FLOAT_BYTES * fp.params + peak_bytes(lambda: bounds_on_test_set(model, x, k, torch.Generator().manual_seed(0)))
    estimate = fp.eval_bytes(rows=len(x) * k)
    assert measured <= estimate <= 4 * measured, (measured, estimate)


def test_a_latent_size_beyond_memory_is_counted_not_allocated():
    cfg = resolve_config({"model": {"latent_dim": 10**9}}, (1, 28, 28))
    fp = Footprint.of(cfg.model)  # would need terabytes if it were built for real
    assert fp.params == (784 * 512 + 512) + (512 * 256 + 256) + (256 * 2 * 10**9 + 2 * 10**9) + \
        (10**9 * 256 + 256) + (256 * 512 + 512) + (512 * 784 + 784)


def test_a_step_beyond_the_device_is_refused_with_both_figures(monkeypatch):
    monkeypatch.setattr(footprint, "available_bytes", lambda device: (2 * footprint.GIB, "a test's RAM"))
    footprint.check_fits(2 * footprint.GIB, torch.device("cpu"), "a step", "do less")  # exactly what there is: allowed
    with pytest.raises(VaezooError, match=r"a step needs about 3 GiB .* more than the 2 GiB of a test's RAM; do less$"):
        footprint.check_fits(3 * footprint.GIB, torch.device("cpu"), "a step", "do less")
    monkeypatch.setattr(footprint, "available_bytes", lambda device: None)
    footprint.check_fits(10**15, torch.device("cpu"), "a step", "do less")  # a system that says nothing is not refused


def test_the_available_memory_of_this_machine_is_read():
    room = footprint.available_bytes(torch.device("cpu"))
    assert room is not None and 0 < room[0] and room[1]


@pytest.mark.parametrize("backbone", ["mlp", "conv"])
def test_counting_on_the_cpu_and_on_the_meta_device_agree(backbone, monkeypatch):
    """Small models are counted with one real datapoint on the CPU (fast), large ones on the meta device."""
    from vaezoo.models import ModelConfig
    from vaezoo.training import footprint

    cfg = ModelConfig(name="vae", backbone=backbone, input_shape=(1, 28, 28))
    on_cpu = footprint.Footprint.of(cfg)
    monkeypatch.setattr(footprint, "REAL_COUNT_PARAMS", 0)
    assert footprint.Footprint.of(cfg) == on_cpu
