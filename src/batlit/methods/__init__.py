"""Training methods: one LightningModule each, sharing :class:`AdversarialMethod`; each composes the
PGD-AT or TRADES objective (:mod:`~batlit.methods.objectives`), and the robust-fairness methods
share one class-wise mechanism, :class:`ClassWiseMethod` (docs/design.md §9.5). Every concrete
method is in :data:`~batlit.methods.registry.METHODS`."""

# the bases, BAT, the baselines it is compared with, then the later class-wise methods: the order
# of the registry (and of python -m batlit.sync_check)
from .base import AdversarialMethod  # isort: skip
from .standard import Standard  # isort: skip
from .pgd_at import PGDAT  # isort: skip
from .trades import TRADES  # isort: skip
from .bat import BAT  # isort: skip
from .fat import FAT, FATTRADES  # isort: skip
from .gairat import GAIRAT  # isort: skip
from .frl import FRL  # isort: skip
from .classwise import ClassWiseMethod  # isort: skip
from .cfa import CFA, cfa_betas, cfa_margins  # isort: skip
from .wat import WAT, wat_weights  # isort: skip
from .dafa import DAFA, dafa_weights  # isort: skip
from .faal import FAAL, faal_weights  # isort: skip
from .objectives import LossWeights, PGDATObjective, TRADESObjective  # isort: skip
from .registry import METHODS, check_hparams  # isort: skip

__all__ = ["AdversarialMethod", "BAT", "CFA", "ClassWiseMethod", "DAFA", "FAAL", "FAT", "FATTRADES", "FRL", "GAIRAT",
           "LossWeights", "METHODS", "PGDAT", "PGDATObjective", "Standard", "TRADES", "TRADESObjective", "WAT",
           "cfa_betas", "cfa_margins", "check_hparams", "dafa_weights", "faal_weights", "wat_weights"]
