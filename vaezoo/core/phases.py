"""Wall-clock marks of a command's phases, read by the fixed-cost benchmark (benchmarks/fixed_cost.py).

With ``VAEZOO_PHASES=FILE`` in the environment, ``mark(name)`` appends one JSON line {"phase", "t"} (t: the
epoch time) to FILE; without it, ``mark`` does nothing, so the marks cost nothing in ordinary runs.
"""

from __future__ import annotations

import json
import os
import time

ENV = "VAEZOO_PHASES"


def mark(name: str) -> None:
    path = os.environ.get(ENV)
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"phase": name, "t": time.time()}) + "\n")
