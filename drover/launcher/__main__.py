"""``python3 -m drover.launcher``: the same as the ``launcher`` command."""

import sys

from drover.launcher.cli import main

sys.exit(main())
