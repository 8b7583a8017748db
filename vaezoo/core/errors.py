"""The one exception type a user sees: bad input, reported in one clear line (exit code 2)."""


class VaezooError(Exception):
    """Bad input or an impossible request; the CLI prints it and exits with code 2."""


class TrainingDiverged(VaezooError):
    """A NaN or inf appeared in a training term; the last good checkpoint, if there is one, is kept."""
