"""``python -m ddlnl.cli``: the ``ddlnl`` command line."""

import sys

from . import main

sys.exit(main())
