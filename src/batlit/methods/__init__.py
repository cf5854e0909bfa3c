"""Training methods: one LightningModule each, sharing :class:`AdversarialMethod`."""

from .base import AdversarialMethod
from .bat import BAT
from .fat import FAT, FATTRADES
from .frl import FRL
from .gairat import GAIRAT
from .pgd_at import PGDAT
from .standard import Standard
from .trades import TRADES

__all__ = ["AdversarialMethod", "BAT", "FAT", "FATTRADES", "FRL", "GAIRAT", "PGDAT", "Standard", "TRADES"]
