"""``python -m batlit.bench``: the training-step benchmark of :mod:`batlit.tools.bench`, kept at this entry point."""

from .tools.bench import main

if __name__ == "__main__":
    main()
