"""The ``vaezoo`` command line: parse, validate, call the library. No logic of its own.

Every bad input ends in one line ``error: ...`` and exit code 2, before anything is written.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """The console script. In a runtime-only install (numpy + onnxruntime) click is absent: say what to
    install instead of a traceback; ``python -m vaezoo.runtime`` is that install's command line."""
    from vaezoo.core.phases import mark

    mark("main")
    try:
        import click  # noqa: F401
    except ImportError:
        print("error: the vaezoo command needs the training extras: pip install 'vaezoo[train]'; "
              "a runtime-only install samples with `python -m vaezoo.runtime`", file=sys.stderr)
        return 2
    from vaezoo.cli.app import cli
    from vaezoo.cli.run import run_click

    return run_click(cli, argv)

