"""``python -m vaezoo.cli``: the ``vaezoo`` command."""

import sys

from vaezoo.cli import main

sys.exit(main())
