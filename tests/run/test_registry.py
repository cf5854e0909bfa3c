"""The registry maps each stored ``_target_`` to the object of that name (gaps found by
scripts/mutants.py, docs/testing.md)."""

from __future__ import annotations

import batlit.data
import batlit.models
from batlit.registry import DATAMODULES, MODELS


def test_each_registered_factory_is_the_one_its_target_names():
    for target, factory in MODELS.items():
        assert factory is getattr(batlit.models, target.rsplit(".", 1)[1]), target
    for target, cls in DATAMODULES.items():
        assert cls is getattr(batlit.data, target.rsplit(".", 1)[1]), target
