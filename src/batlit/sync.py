"""The host syncs batlit makes on purpose, in one place.

On a GPU every read of a device value by the host (``.item()``, ``bool(t)``, ``nonzero``, a boolean
mask index) waits until the queue has run up to it. batlit makes such reads only where they pay
for themselves, and only through these functions:

- :func:`nonzero_rows`: boundary_pgd's compaction, the one sync per attack step that drops the
  samples whose ``first_adv`` is fixed (docs/performance.md);
- :func:`any_true`: boundary_pgd's early exit without compaction, once per step;
- :func:`read`: a value a decision needs on the host, at most once per epoch (CFA's FAWA check,
  DAFA's weight check) or once every N steps (the non-finite loss guard).

``tests/methods/test_host_syncs.py`` counts the calls per training step of every method and makes any other
read-back inside a step raise; on a GPU, ``scripts/gpu_bench.sh`` counts the syncs CUDA itself
sees (``torch.cuda.set_sync_debug_mode``).
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Any, Iterator

from torch import Tensor

calls: Counter[str] = Counter()  # how often each kind ran (tests read and reset it)
_depth = 0                       # > 0 while one of these functions is reading (tests allow that read)


@contextmanager
def _reading(kind: str) -> Iterator[None]:
    global _depth
    calls[kind] += 1
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1


def inside() -> bool:
    """True while a sync of this module runs (the test's read-back trap lets it through)."""
    return _depth > 0


def nonzero_rows(mask: Tensor) -> Tensor:
    """Indices of the true entries of a 1-d mask (one host sync: the result's size)."""
    with _reading("nonzero_rows"):
        return mask.nonzero().squeeze(1)


def any_true(mask: Tensor) -> bool:
    """Whether any entry is true (one host sync)."""
    with _reading("any_true"):
        return bool(mask.any())


def read(tensor: Tensor) -> Any:
    """The tensor's value on the host: a Python number for one element, else a list (one sync)."""
    with _reading("read"):
        return tensor.item() if tensor.numel() == 1 else tensor.tolist()


@contextmanager
def counting() -> Iterator[Counter[str]]:
    """Count the syncs made inside the block: ``with counting() as c: ...; c["nonzero_rows"]``."""
    before = Counter(calls)
    found: Counter[str] = Counter()
    try:
        yield found
    finally:
        found.update({k: v - before.get(k, 0) for k, v in calls.items() if v - before.get(k, 0)})
