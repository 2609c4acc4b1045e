"""``python3 -m drover.watchdog``: the same as the ``watchdog`` command."""

import sys

from drover.watchdog.cli import main

sys.exit(main())
