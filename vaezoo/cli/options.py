"""Options and value parsers several commands share, declared once."""

from __future__ import annotations

import click

from vaezoo.core.errors import VaezooError


def tracking_options(f):
    """``--no-track`` and ``--tracking-uri``, the same on every command that logs to MLflow."""
    f = click.option("--no-track", is_flag=True, help="Do not log to MLflow.")(f)
    f = click.option("--tracking-uri", default=None,
                     help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite in ./mlruns).")(f)
    return f


def comma_list(values: str | tuple[str, ...] | None, what: str) -> tuple[str, ...] | None:
    """Items of an option given comma-separated and/or repeated; None when it was not given. An option
    given with no items at all ('--batch-size ,') is an error, not the defaults."""
    if values is None or values == ():
        return None
    values = (values,) if isinstance(values, str) else values
    items = tuple(v.strip() for item in values for v in item.split(",") if v.strip())
    if not items:
        raise VaezooError(f"{what} was given no values")
    return items


def comma_ints(values: str | tuple[str, ...] | None, what: str, minimum: int | None = None) -> tuple[int, ...] | None:
    """``comma_list`` as integers (each >= ``minimum`` when given)."""
    items = comma_list(values, what)
    if items is None:
        return None
    try:
        ints = tuple(int(v) for v in items)
    except ValueError:
        raise VaezooError(f"{what} must be comma-separated integers, got '{','.join(items)}'") from None
    if minimum is not None and any(v < minimum for v in ints):
        raise VaezooError(f"{what} must be integers >= {minimum}, got '{','.join(items)}'")
    return ints
