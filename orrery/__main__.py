"""``python -m orrery``: the ``orrery`` command (how the local cluster starts its processes)."""

import sys

from orrery.cli import main

sys.exit(main())
