"""``python -m masn``: the ``masn`` command line."""

import sys

from masn.pipeline.cli import main

sys.exit(main())
