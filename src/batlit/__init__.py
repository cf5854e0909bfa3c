"""batlit: Balance Adversarial Training and robust-fairness baselines as Lightning modules."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("batlit")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"

# conf/'s files name batlit's resolvers (${batlit_fast_bf16:...}, ...): registered on import, so that
# any of them can be composed or instantiated, not only from batlit's own entry points.
from .config import register_resolvers  # noqa: E402
from .checkpoint.weights import register_resolver  # noqa: E402  (${batlit_source_dir:...}: evaluate's and analyze's out_dir)

register_resolvers()
register_resolver()

__all__ = ["__version__"]
