"""batlit: Balance Adversarial Training and robust-fairness baselines as Lightning modules."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("batlit")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
