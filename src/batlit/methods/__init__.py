"""Training methods: one LightningModule each, sharing :class:`AdversarialMethod`; the
robust-fairness methods share :class:`ClassWiseMethod` (docs/design.md §9.5)."""

from .base import AdversarialMethod
from .bat import BAT
from .cfa import CFA, cfa_betas, cfa_margins
from .classwise import ClassWiseMethod
from .dafa import DAFA, dafa_weights
from .faal import FAAL, faal_weights
from .fat import FAT, FATTRADES
from .frl import FRL
from .gairat import GAIRAT
from .pgd_at import PGDAT
from .standard import Standard
from .trades import TRADES
from .wat import WAT, wat_weights

__all__ = ["AdversarialMethod", "BAT", "CFA", "ClassWiseMethod", "DAFA", "FAAL", "FAT", "FATTRADES", "FRL", "GAIRAT",
           "PGDAT", "Standard", "TRADES", "WAT", "cfa_betas", "cfa_margins", "dafa_weights", "faal_weights",
           "wat_weights"]
