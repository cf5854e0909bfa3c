"""``python -m batlit.report RUN_DIR...``: :func:`batlit.report.tables.main`."""

import sys

from .tables import main

sys.exit(main())
