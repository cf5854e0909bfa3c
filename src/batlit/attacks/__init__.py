"""Attacks: plain functions / callables on (model, images, labels), usable without Lightning."""

from ._common import PRECISIONS, AttackPrecision, AutocastLogits, attack_precision, eval_mode, kl_near_x
from .boundary import BoundaryExamples, boundary_pgd
from .pgd import PGD, pgd

__all__ = ["PGD", "pgd", "boundary_pgd", "BoundaryExamples", "eval_mode", "attack_precision", "AttackPrecision",
           "AutocastLogits", "kl_near_x", "PRECISIONS"]
