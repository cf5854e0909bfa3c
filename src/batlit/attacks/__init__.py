"""Attacks: plain functions / callables on (model, images, labels), usable without Lightning."""

from ._common import eval_mode
from .boundary import BoundaryExamples, boundary_pgd
from .pgd import PGD, pgd

__all__ = ["PGD", "pgd", "boundary_pgd", "BoundaryExamples", "eval_mode"]
