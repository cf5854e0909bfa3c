"""``python -m batlit.data {list,info,clear} [--dir DIR]``: the decoded-data cache's command line
(:func:`batlit.data.cache.main`; see :mod:`batlit.data.cache` for the cache itself)."""

import sys

from .cache import main

if __name__ == "__main__":
    sys.exit(main())
