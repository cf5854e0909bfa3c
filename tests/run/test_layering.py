"""The import rule: the library (batlit.attacks, methods, metrics, models, data and the leaves
errors, sync, vocab) never imports the harness (config, checkpoint, train, evaluate, analyze,
report, tools, ...). Checked on the source's syntax trees, imports inside functions included."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "batlit"
CORE_PACKAGES = ("attacks", "methods", "metrics", "models", "data")
CORE_LEAVES = ("errors", "sync", "vocab")  # modules beside the packages that import nothing of batlit's harness
# what the library really uses besides the standard library (sklearn: the digits dataset, imported lazily)
THIRD_PARTY = {"torch", "torchvision", "lightning", "torchmetrics", "numpy", "PIL", "pyautoattack", "sklearn"}
HARNESS_PACKAGES = {"config": ("cli", "hardware", "resolvers", "validation"),
                    "checkpoint": ("store", "record", "hot_start", "weights"),
                    "report": ("__main__", "tables", "results", "stats", "gallery"),
                    "tools": ("bench", "sync_check", "precision_check", "cost")}
TOP_LEVEL = {"__init__", "errors", "sync", "vocab", "train", "evaluate", "analyze", "registry", "callbacks", "safe_io",
             "bench", "sync_check", "precision_check", "stats"}
# old paths users import or run, kept as thin aliases: alias -> the module it re-exports
ALIASES = {"bench": "batlit.tools.bench", "sync_check": "batlit.tools.sync_check",
           "precision_check": "batlit.tools.precision_check", "stats": "batlit.report.stats"}


def core_files() -> list[Path]:
    files = [p for pkg in CORE_PACKAGES for p in sorted((SRC / pkg).rglob("*.py"))]
    return files + [SRC / f"{leaf}.py" for leaf in CORE_LEAVES]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def absolute(node: ast.ImportFrom, package: str) -> str:
    """The module a ``from ... import`` names, relative levels resolved against ``package``."""
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def is_batlit_module(name: str) -> bool:
    path = SRC.parent / name.replace(".", "/")
    return name.startswith("batlit") and (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file())


def imported_modules(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file (or ``source`` read as that file), at
    any depth; ``from pkg import name`` counts as ``pkg.name`` when that is a module of batlit's."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = absolute(node, package)
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.append((node.lineno, sub if is_batlit_module(sub) else module))
    return found


def violations(files: list[Path], sources: dict[Path, str] | None = None) -> list[str]:
    allowed_batlit = {f"batlit.{name}" for name in CORE_PACKAGES + CORE_LEAVES}
    bad = []
    for path in files:
        for line, module in imported_modules(path, (sources or {}).get(path)):
            top = module.split(".")[0]
            if top == "batlit":
                if not any(module == ok or module.startswith(ok + ".") for ok in allowed_batlit):
                    bad.append(f"{path.relative_to(SRC.parent)}:{line} imports {module}")
            elif top not in sys.stdlib_module_names and top not in THIRD_PARTY and top != "__future__":
                bad.append(f"{path.relative_to(SRC.parent)}:{line} imports {module} (not a dependency of the library)")
    return bad


def test_the_library_imports_no_harness():
    assert len(core_files()) > 40  # the walk found the packages
    assert violations(core_files()) == []


def test_the_leaves_import_nothing_of_batlit():
    for leaf in CORE_LEAVES:
        assert [m for _, m in imported_modules(SRC / f"{leaf}.py") if m.split(".")[0] == "batlit"] == [], leaf


def test_the_rule_sees_imports_inside_functions_and_through_the_package():
    """Planted in a method file: a nested relative import of the harness, one of the package
    ``batlit`` itself (its __init__ imports the harness), and an unlisted dependency."""
    planted = SRC / "methods" / "planted.py"
    source = ("import torch\nfrom .. import sync\n\n\ndef f():\n    from ..config import validate\n"
              "    from .. import __version__\n    import hydra\n")
    assert violations([planted], {planted: source}) == [
        "batlit/methods/planted.py:6 imports batlit.config",
        "batlit/methods/planted.py:7 imports batlit",
        "batlit/methods/planted.py:8 imports hydra (not a dependency of the library)"]


def test_the_harness_lives_in_named_packages():
    for package, modules in HARNESS_PACKAGES.items():
        for name in modules:
            assert (SRC / package / f"{name}.py").is_file(), f"batlit/{package}/{name}.py"
    flat = {p.stem for p in SRC.glob("*.py")}
    assert flat == TOP_LEVEL, f"new flat modules: {sorted(flat - TOP_LEVEL)}, gone: {sorted(TOP_LEVEL - flat)}"


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_an_old_path_only_re_exports(alias):
    """An alias module holds a docstring, imports from its new home, ``__all__`` and the ``-m``
    call of ``main``: nothing of its own."""
    tree = ast.parse((SRC / f"{alias}.py").read_text())
    docstring, *body = tree.body
    assert isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)
    target = ALIASES[alias]
    for node in body:
        if isinstance(node, ast.ImportFrom):
            assert absolute(node, "batlit") == target, ast.unparse(node)
        elif isinstance(node, ast.Assign):
            assert [t.id for t in node.targets] == ["__all__"], ast.unparse(node)
        elif isinstance(node, ast.If):
            assert ast.unparse(node) == "if __name__ == '__main__':\n    main()", ast.unparse(node)
        else:
            raise AssertionError(f"batlit/{alias}.py: {ast.unparse(node)}")
    old, new = importlib.import_module(f"batlit.{alias}"), importlib.import_module(target)
    names = getattr(old, "__all__", ["main"])
    assert names and all(getattr(old, n) is getattr(new, n) for n in names)


def test_the_harness_re_exports_the_library_s_errors():
    from batlit import config, errors

    assert config.ConfigError is errors.ConfigError and config.UserError is errors.UserError
    assert config.DataUnavailableError is errors.DataUnavailableError
