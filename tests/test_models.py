"""The model registry, typed configs that round-trip through JSON, backbones, and the variants."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

import vaezoo
from vaezoo.core.configs import from_dict, to_dict
from vaezoo.core.errors import VaezooError
from vaezoo.models import ModelConfig, get_model, list_models, register_model
from vaezoo.training.config import TrainConfig, resolve_config


def test_registry_lists_the_variants_and_refuses_unknown_names():
    assert {s.name for s in list_models()} >= {"ae", "vae", "beta-vae", "iwae"}
    with pytest.raises(VaezooError, match="unknown model 'nope'; choose from"):
        get_model("nope")
    with pytest.raises(ValueError, match="registered twice"):
        register_model("vae", "again")(object)


def test_configs_round_trip_through_json_and_reject_unknown_keys():
    cfg = resolve_config({"model": {"name": "iwae", "preset": "burda"}, "seed": 3}, (1, 28, 28))
    again = from_dict(TrainConfig, json.loads(json.dumps(to_dict(cfg))))
    assert again == cfg
    assert cfg.objective.bound == "iwae" and cfg.objective.k == 5 and cfg.objective.kl == "mc"
    assert cfg.model.hidden == (200, 200) and cfg.model.latent_dim == 50 and cfg.model.activation == "tanh"
    with pytest.raises(VaezooError, match="unknown config key 'model.colour'"):
        from_dict(TrainConfig, {"model": {"colour": 1}})
    with pytest.raises(VaezooError, match="batch_size must be > 0"):
        resolve_config({"batch_size": 0})
    with pytest.raises(VaezooError, match="latent_dim must be > 0"):
        resolve_config({"model": {"latent_dim": -2}})


def test_config_knows_the_backbone_names_and_refuses_others():
    from vaezoo.models.backbones import BACKBONES
    from vaezoo.models.config import BACKBONE_NAMES

    assert BACKBONE_NAMES == tuple(BACKBONES)  # config.py lists them without importing the networks
    with pytest.raises(VaezooError, match="unknown backbone 'resnet'; choose from mlp, conv, linear"):
        ModelConfig(backbone="resnet")
    with pytest.raises(VaezooError, match="unknown backbone 'resnet'"):
        resolve_config({"model": {"backbone": "resnet"}})


@pytest.mark.parametrize("variant", ["vae", "vamp"])  # vamp: its own log p(z) and sample()
@pytest.mark.parametrize("backbone,shape", [("mlp", (1, 28, 28)), ("conv", (1, 28, 28)), ("conv", (1, 8, 8)), ("linear", (12,))])
def test_backbones_encode_decode_and_score_with_sample_dims(backbone, shape, variant):
    model = get_model(variant, pseudo_inputs=6, backbone=backbone, input_shape=shape, latent_dim=5, hidden=(16,), channels=(4, 8))
    x = torch.rand(3, *shape).bernoulli()
    q = model.encode(x)
    assert q.mu.shape == (3, 5) and (q.sigma > 0).all()
    z = torch.randn(7, 3, 5)
    assert model.decode(z).shape == (7, 3, *shape)
    assert model.log_likelihood(x, z).shape == (7, 3)
    assert model.log_prior(z).shape == (7, 3)
    assert model.sample(4).shape == (4, *shape)


def test_encoder_scale_is_numerically_safe():
    model = get_model("vae", hidden=(8,), latent_dim=2, input_shape=(4,))
    with torch.no_grad():
        model.encoder[-1].bias.fill_(-1e4)  # would be exp(-5000) = 0 with a log-variance head
    q = model.encode(torch.zeros(2, 4))
    assert (q.sigma > 0).all() and torch.isfinite(q.log_sigma).all() and torch.isfinite(q.kl_standard_normal()).all()


def test_burda_preset_initialises_output_bias_to_pixel_mean_logit():
    model = get_model("vae", preset="burda")
    mean = torch.full((1, 28, 28), 0.2)
    model.init_output_bias(mean)
    last = model.decoder[-2]
    torch.testing.assert_close(last.bias, torch.full((784,), torch.logit(torch.tensor(0.2)).item()))
    assert [m.out_features for m in model.encoder if isinstance(m, torch.nn.Linear)] == [200, 200, 100]


def test_ae_decodes_prior_samples_and_has_no_density():
    ae = get_model("ae", hidden=(16,), latent_dim=3, input_shape=(1, 4, 4))
    assert not ae.stochastic
    assert ae.sample(5).shape == (5, 1, 4, 4)
    assert not hasattr(ae.encode(torch.zeros(2, 1, 4, 4)), "log_prob")


def test_model_files_hold_no_loss_code():
    """Models never import objectives (estimators are added without touching a model file)."""
    root = Path(vaezoo.__file__).parent / "models"
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not any("objectives" in n or "mlflow" in n for n in names), path


def test_model_config_defaults_are_the_reference_vae():
    cfg = ModelConfig()
    assert (cfg.hidden, cfg.latent_dim, cfg.likelihood, cfg.activation) == ((512, 256), 32, "bernoulli", "relu")
