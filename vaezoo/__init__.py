"""vaezoo: reference VAEs, their bounds and gradient estimators, and honest benchmarks.

Kept light on purpose: importing ``vaezoo`` pulls in nothing heavy, so ``vaezoo.runtime``
can be used by services that have neither torch nor mlflow installed.

Convention (stated once, tested in tests/test_bounds.py): every bound is in nats per
datapoint — summed over pixels and latent dimensions, averaged over the batch. A logged
bound is the bound itself; the loss is -bound (or a surrogate whose gradient is the
chosen estimator, never logged as the bound).
"""

__version__ = "0.1.0"
