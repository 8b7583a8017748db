"""Gradient noise of VAE objectives: per-example gradients (torch.func), their statistics, and the study
behind ``vaezoo bench gradvar`` (variance and SNR versus batch size B, samples per z K and estimator).

- ``stats``: pure statistics on gradient draws (traces, SNR, noise scale, log-log fits, bootstrap).
- ``pergrad``: gradients of an objective's surrogate per draw or per example, vectorised with torch.func.
- ``measure``: the grid of cells, the seeded draws, and each cell's measured figures.
- ``analysis``: the fitted slopes, the two noise-scale estimates and the equal-compute comparison.
- ``report``: JSON, tidy CSV, markdown summary and plots.
"""
