"""Alias kept for one release: ``python -m batlit.precision_check`` runs :mod:`batlit.tools.precision_check`."""

from .tools.precision_check import main

if __name__ == "__main__":
    main()
