"""The registry of batlit's training methods: every concrete method class, under its config target.

A method class joins :data:`METHODS` when it is defined (``AdversarialMethod.__init_subclass__``)
and declares there what the harness needs of it, so adding a method touches its file, its config
and its tests only:

- ``hparam_rules``: the rules its ``method.<key>`` values obey (:func:`check_hparams`, run by the
  config validation before any data or model loads, and again by ``AdversarialMethod.__init__``
  on the constructor's arguments: the one place a value is checked); a subclass adds to its
  bases' rules;
- ``sync_checks``: small constructor kwargs per case of ``python -m batlit.sync_check``.

Nothing here imports a name read from a file: a target is looked up in :data:`METHODS`, a plain
dict of the classes Python defined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import ConfigError

MISSING = "???"  # a mandatory value the config left unset (OmegaConf's marker in a plain container)

# "batlit.methods.<Name>" -> class, in the order the classes were defined
METHODS: dict[str, type] = {}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    """One ``method.<key>`` rule: ``ok(value)`` must hold for a value that is set (not null)."""

    text: str                                   # "must be <text>", or the whole message
    ok: Callable[[Any], bool] = lambda v: True  # noqa: E731 - what a set value must satisfy

    def error(self, key: str, value: Any, epochs: Any) -> str | None:
        if value is None:
            return None
        try:
            good = self.ok(value)
        except (TypeError, ValueError):
            good = False
        return None if good else f"method.{key} must be {self.text}, got {value!r}"


@dataclass(frozen=True)
class Required(Rule):
    """A key the config marks mandatory (``???``): a checkpoint to fine-tune."""

    def error(self, key: str, value: Any, epochs: Any) -> str | None:
        return self.text if value == MISSING else None


@dataclass(frozen=True)
class AtMostEpochs(Rule):
    """A 1-based epoch (:data:`EPOCH`) the run must reach; ``text`` says what a later one misses."""

    def error(self, key: str, value: Any, epochs: Any) -> str | None:
        not_an_epoch = EPOCH.error(key, value, epochs)
        if not_an_epoch:
            return not_an_epoch
        if _is_int(value) and _is_int(epochs) and value > epochs:
            return f"method.{key}={value} is beyond the run's epochs={epochs}: {self.text}"
        return None


NONNEGATIVE = Rule(">= 0", lambda v: not isinstance(v, bool) and v >= 0)
UNIT_OR_NULL = Rule("in [0, 1] (or null for the base's default)", lambda v: v is None or 0 <= v <= 1)
UNIT = Rule("in [0, 1]", lambda v: not isinstance(v, bool) and 0 <= v <= 1)
COUNT = Rule("an integer >= 0", lambda v: _is_int(v) and v >= 0)
EPOCH = Rule("an integer >= 1", lambda v: not isinstance(v, bool) and float(v).is_integer() and v >= 1)  # 1-based
INIT_CKPT = Required("method.init_ckpt is required: the checkpoint to fine-tune (e.g. last.ckpt of a PGD-AT run)")


def one_of(choices: Any) -> Rule:
    """A value among ``choices`` (a name's spelling)."""
    return Rule(f"one of {', '.join(choices)}", lambda v: v in tuple(choices))


def register(cls: type) -> None:
    """Add a concrete method class of ``batlit.methods`` under ``batlit.methods.<Name>``."""
    METHODS[f"batlit.methods.{cls.__name__}"] = cls


def hparam_rules(cls: type) -> dict[str, Rule]:
    """The rules of ``cls`` and its bases (a subclass's rule for a key wins)."""
    rules: dict[str, Rule] = {}
    for klass in reversed(cls.__mro__):
        rules.update(klass.__dict__.get("hparam_rules", {}))
    return rules


def shared_rules() -> dict[str, Rule]:
    """The rules every registered method that has the key agrees on: what a method class from
    outside batlit is checked against (GAIRAT's λ may be negative, DAFA's may not: no rule)."""
    found: dict[str, set[Rule]] = {}
    for cls in METHODS.values():
        for key, rule in hparam_rules(cls).items():
            found.setdefault(key, set()).add(rule)
    return {key: next(iter(rules)) for key, rules in found.items() if len(rules) == 1}


def check_hparams(target: str | type, method_cfg: Mapping[str, Any], epochs: Any = None) -> None:
    """Check the ``method`` config of the method class ``target`` (its ``_target_``, or the class)
    against the class's declared rules, before anything is built; raise one line naming the key.

    ``method_cfg``: the method's keys as plain values, a mandatory unset one as ``"???"``
    (``OmegaConf.to_container(cfg.method, resolve=True, throw_on_missing=False)``);
    ``epochs``: the run's, for a rule about an epoch the run must reach.
    """
    cls = target if isinstance(target, type) else METHODS.get(str(target))
    rules = hparam_rules(cls) if cls is not None else shared_rules()
    for key, rule in rules.items():
        if key in method_cfg:
            message = rule.error(key, method_cfg[key], epochs)
            if message:
                raise ConfigError(message)


def sync_check_cases() -> dict[str, tuple[type, dict[str, Any]]]:
    """``python -m batlit.sync_check``'s cases: name -> (class, constructor kwargs), as each class
    declares them in ``sync_checks``."""
    return {name: (cls, dict(kwargs)) for cls in METHODS.values()
            for name, kwargs in cls.__dict__.get("sync_checks", {}).items()}
