"""``python -m vaezoo``: the ``vaezoo`` command."""

import sys

from vaezoo.cli import main

sys.exit(main())
