"""The full, typed config of a training run, how user choices resolve into it, and the reference run.

Resolution order: dataclass defaults < the model variant's objective defaults (e.g. IWAE's bound
and K) < the user's values. The resolved config is explicit (no 'auto' left) and is hashed.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from vaezoo.core.configs import check_types, config_hash, from_dict, to_dict
from vaezoo.core.errors import VaezooError
from vaezoo.data import DataConfig
from vaezoo.models import ModelConfig, model_spec
from vaezoo.objectives import ObjectiveConfig
from vaezoo.tracking.provenance import DEVICES

# The reference VAE of ``make bench`` and the gradient-variance study: Bernoulli-logit MLP, 784-512-256 ReLU ->
# 32-d Gaussian latent, mirror decoder, Adam 1e-3, batch 128, one z sample, closed-form KL (the model of
# shared/ANCHORS.md), as the user-level dict that resolve_config completes.
# Measurement studies (vaezoo.gradnoise) may use the pair; training refuses it unless allowed explicitly.
STL_IWAE = ("STL on the IWAE bound is a biased gradient estimator (Tucker et al. 2019: its expectation is not the "
            "bound's gradient for K > 1)")

REFERENCE = {"model": {"name": "vae"}, "data": {"name": "mnist5k"}, "steps": 3000, "eval_every": 1000, "checkpoint_every": 1000}


@dataclass
class OptimConfig:
    """Adam. ``fused``: torch's one-kernel Adam, the same update in fewer passes over memory (1.1-1.15x the
    training speed of the default multi-tensor Adam on a 2-core CPU); false gives torch's default Adam.
    ``milestones`` (steps, increasing) and ``gamma``: the learning rate is lr x gamma^(milestones passed), a pure
    function of the step (so a resumed run follows it exactly); Burda et al. 2016's 3^i-epoch stages are one case."""

    lr: float = 1e-3
    betas: tuple[float, ...] = (0.9, 0.999)
    eps: float = 1e-8
    fused: bool = True
    milestones: tuple[int, ...] = ()
    gamma: float = 1.0

    def lr_at(self, step: int) -> float:
        """The learning rate of the step ``step`` (0-based)."""
        return self.lr * self.gamma ** bisect.bisect_right(self.milestones, step)

    def __post_init__(self) -> None:
        if not (0 < self.lr < math.inf and 0 < self.eps < math.inf):  # written so that nan fails too
            raise VaezooError(f"lr and eps must be > 0 and finite, got lr={self.lr} eps={self.eps}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise VaezooError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:])) or any(m <= 0 for m in self.milestones):
            raise VaezooError(f"milestones must be increasing steps > 0, got {self.milestones}")
        if not 0 < self.gamma < math.inf:
            raise VaezooError(f"gamma must be > 0 and finite, got {self.gamma}")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch_size: int = 128
    steps: int = 2000
    seed: int = 0
    device: str = "auto"
    deterministic: bool = False
    eval_every: int = 500
    eval_k: int = 64
    checkpoint_every: int = 500
    log_every: int = 50
    allow_stl_iwae: bool = False  # train with STL on the IWAE bound although its gradient is biased

    def __post_init__(self) -> None:
        for name in ("batch_size", "steps", "eval_every", "checkpoint_every", "log_every", "eval_k"):
            if getattr(self, name) <= 0:
                raise VaezooError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.device not in DEVICES:
            raise VaezooError(f"unknown device '{self.device}'; choose from {', '.join(DEVICES)}")
        if self._stl_iwae and not self.allow_stl_iwae:
            raise VaezooError(f"{STL_IWAE}; train with --estimator dreg (or reparam), or pass --allow-stl-iwae to use it anyway")

    @property
    def _stl_iwae(self) -> bool:
        return self.objective.bound == "iwae" and self.objective.estimator == "stl"

    def warnings(self) -> dict[str, str]:
        """Run tags for what was allowed although it is known to be wrong (the run records them; train says them)."""
        return {"vaezoo.warning.stl_iwae": STL_IWAE + " (allowed by --allow-stl-iwae)"} if self._stl_iwae else {}

    @property
    def hash(self) -> str:
        return config_hash(self)

    def to_dict(self) -> dict:
        return to_dict(self)


def resolve_for_dataset(user: dict) -> TrainConfig:
    """``resolve_config`` with the input shape of the dataset ``user`` names (DataConfig's by default)."""
    from vaezoo.data import DATASET_SHAPES

    check_types(TrainConfig, user)  # 'data' a mapping, its name a string, before they are read here
    name = user.get("data", {}).get("name", DataConfig.name)
    if name not in DATASET_SHAPES:
        raise VaezooError(f"unknown dataset '{name}'; choose from {', '.join(DATASET_SHAPES)}")
    return resolve_config(user, DATASET_SHAPES[name])


def resolve_config(user: dict, input_shape: tuple[int, ...] | None = None) -> TrainConfig:
    """Merge the model variant's objective defaults under the user's values, and fill the data-
    dependent fields (input shape, binarisation for the likelihood)."""
    check_types(TrainConfig, user)  # every key and type as TrainConfig has it, before the merge reads them
    user = {k: dict(v) if isinstance(v, dict) else v for k, v in user.items()}
    model = user.setdefault("model", {})
    spec = model_spec(model.get("name", ModelConfig.name))
    objective = {**spec.objective_defaults, **user.get("objective", {})}
    user["objective"] = objective
    if input_shape is not None:
        model["input_shape"] = list(input_shape)
    cfg = from_dict(TrainConfig, user)
    if cfg.data.binarize == "auto":
        cfg.data.binarize = "dynamic" if cfg.model.likelihood == "bernoulli" else "none"
    return cfg


def check_epochs(epochs: int) -> None:
    if epochs <= 0:
        raise VaezooError(f"epochs must be > 0, got {epochs}")


def check_batch_fits(batch_size: int, n_train: int, dataset: str) -> None:
    if batch_size > n_train:
        raise VaezooError(f"batch size {batch_size} exceeds the {n_train} training examples of '{dataset}'")


def epochs_to_steps(epochs: int, n_train: int, batch_size: int, dataset: str) -> int:
    check_epochs(epochs)
    check_batch_fits(batch_size, n_train, dataset)
    return epochs * (n_train // batch_size)
