"""``python -m vaezoo.bench.throughput``: the benchmark alone, without the rest of the ``vaezoo`` command line."""

import sys

from vaezoo.bench.throughput.command import throughput_command
from vaezoo.cli.run import run_click

sys.exit(run_click(throughput_command))
