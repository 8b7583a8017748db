"""Bounds and gradient estimators, kept apart from the models: an objective takes a model and a batch.

Convention: every bound is in nats per datapoint (summed over pixels and latent dimensions, averaged over
the batch). ``ObjectiveOutput.bound`` is the bound itself; ``loss`` is -mean(surrogate), whose gradient is
the chosen estimator. With beta != 1 the bound stays the true ELBO; beta enters only the loss.
"""

from vaezoo.objectives.objective import (
    ESTIMATORS,
    Objective,
    ObjectiveConfig,
    ObjectiveOutput,
)

__all__ = ["ESTIMATORS", "Objective", "ObjectiveConfig", "ObjectiveOutput"]
