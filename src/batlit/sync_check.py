"""Alias kept for one release: ``python -m batlit.sync_check`` runs :mod:`batlit.tools.sync_check`."""

from .tools.sync_check import main

if __name__ == "__main__":
    main()
