"""``python -m ddlnl``: the ``ddlnl`` command line."""

import sys

from .cli import main

sys.exit(main())
