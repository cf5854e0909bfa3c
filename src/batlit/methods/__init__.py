"""Training methods: one LightningModule each, sharing :class:`AdversarialMethod`."""

from .base import AdversarialMethod
from .bat import BAT
from .pgd_at import PGDAT
from .standard import Standard
from .trades import TRADES

__all__ = ["AdversarialMethod", "BAT", "PGDAT", "Standard", "TRADES"]
