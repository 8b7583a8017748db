"""Models: encode, decode and score (log p(x|z), log q(z|x), log p(z)). No loss code lives here."""

from vaezoo.models import ae, vae, vamp  # noqa: F401  (importing registers the variants)
from vaezoo.models.config import PRESETS, ModelConfig
from vaezoo.models.registry import build_model, get_model, list_models, model_spec, register_model

__all__ = ["ModelConfig", "PRESETS", "build_model", "get_model", "list_models", "model_spec", "register_model"]
