"""Torch-free helpers every part of vaezoo shares: the error type, atomic file writes, PNG grids,
progress bars, and typed configs with the ``--set`` merge. Nothing here imports torch, so the runtime
and the command line's help can use it."""
