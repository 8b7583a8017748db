"""Running a click command the vaezoo way: bad input is one line ``error: ...`` and exit code 2.

Kept free of heavy imports (no torch) so ``vaezoo`` and the ``python -m vaezoo.bench...`` entry points
share it without paying for each other's dependencies.
"""

from __future__ import annotations

import click

from vaezoo.core.errors import VaezooError


def run_click(command: click.Command, argv: list[str] | None = None) -> int:
    """Run ``command`` on ``argv`` (None: sys.argv) and return its exit code instead of exiting."""
    try:
        rc = command.main(args=argv, standalone_mode=False)
    except VaezooError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except OSError as exc:  # a path the system refuses (permissions, a full disk, a missing folder)
        where = f" '{exc.filename}'" if exc.filename else ""
        click.echo(f"error: cannot use{where}: {exc.strerror or exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    # without standalone mode click returns the callback's value (None) or the code of --help/--version
    return rc if isinstance(rc, int) else 0
