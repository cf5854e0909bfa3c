"""scripts/mutants.py finds each mutation point by AST: the entry's enclosing function (or class, or
module-level name) anywhere in the package, the node to change by ``ast.unparse``, its exact source
span replaced. In-process, without running a single mutant's tests: every entry of the table
locates exactly once in the real src/ and still parses once mutated; on a sample, the mutated module
is the one the verbatim snippets of the table before it wrote, character for character; and on
small packages made here, the locator follows a reformatted or moved function and refuses a missing,
repeated or ambiguous one in one line."""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import pytest

from conftest import ROOT


def _load():
    spec = importlib.util.spec_from_file_location("batlit_mutants_script", ROOT / "scripts" / "mutants.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


mutants = _load()
SRC = ROOT / "src"

# The table before AST entries: (the verbatim snippet, its replacement), for a sample of entries of
# every shape (expression, module-level constant, deleted statement, a span over several lines, a
# nested function), from modules outside methods/.
SNIPPETS = {
    "pgd-descends": ("x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps)",
                     "x_adv = project(x_adv.detach() - step_size * grad.sign(), x, eps)"),
    "pgd-one-step-short": ("for k in range(int(steps)):", "for k in range(int(steps) - 1):"),
    "pgd-cw-confidence": ("CW_CONFIDENCE = 50.0", "CW_CONFIDENCE = 0.0"),
    "common-eval-mode-not-restored": ("            m.training = training", "            m.training = True"),
    "common-kl-near-x-none": ('return loss == "kl" and init in ("normal", "none")',
                              'return loss == "kl" and init == "normal"'),
    "boundary-tau-off-by-one": ("fixed = mis & (mis_count == tau + 1)", "fixed = mis & (mis_count == tau)"),
    "boundary-no-step-noise": ("step = step + step_noise_std * torch.randn(", "step = step + 0 * torch.randn("),
    "metric-worst-is-min": ('out[f"{name}_worst"] = masked.max().float()',
                            'out[f"{name}_worst"] = errors[seen].min().float()'),
    "steps-never-strict": ("(steps >= self.max_steps).long()", "(steps > self.max_steps).long()"),
    "analyze-diagonal-kept": ("    off.fill_diagonal_(0)\n", ""),
    "report-per-class-first-seed": ('rows = [r.metrics[f"{metric}_per_class"] for r in self.runs]',
                                    'rows = [r.metrics[f"{metric}_per_class"] for r in self.runs[:1]]'),
    "reporting-table-fraction": ('return "-" if v is None else f"{100 * v:.2f}"',
                                 'return "-" if v is None else f"{v:.2f}"'),
    "callbacks-rows-avg-count": ('rows.append(["avg", sum(summary["count_per_class"]),',
                                 'rows.append(["avg", len(summary["count_per_class"]),'),
    "ckpt-no-eval": ("    model.load_state_dict(state)\n    model.eval()\n", "    model.load_state_dict(state)\n"),
    "ckpt-csv-history-strict": ('return not row.get("epoch") or int(float(row["epoch"])) <= done_epoch',
                                'return not row.get("epoch") or int(float(row["epoch"])) < done_epoch'),
    "data-crop-offsets": ("oy = torch.randint(0, 2 * pad + 1, (n, 1), device=dev)",
                          "oy = torch.randint(0, 2 * pad, (n, 1), device=dev)"),
    "cache-evict-strict": ("            if total <= cap:\n                break",
                           "            if total < cap:\n                break"),
    "cache-units": ('_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}',
                    '_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}'),
    "resnet-relu-before-add": ("return F.relu(out + shortcut)", "return F.relu(out) + shortcut"),
    "fold-in-training": ("return (isinstance(bn, _BatchNorm) and not bn.training and bn.running_mean is not None",
                         "return (isinstance(bn, _BatchNorm) and bn.running_mean is not None"),
    "registry-wrn-swapped": ('"batlit.models.wrn28_10": wrn28_10,', '"batlit.models.wrn28_10": wrn34_10,'),
    "evaluate-csv-worst-robust": ('pct(1 - summary["rob_worst"]),\n                    pct(summary["std_worst"])',
                                  'pct(1 - summary["rob_avg"]),\n                    pct(summary["std_worst"])'),
}


def test_every_entry_locates_exactly_once_and_parses_after_mutation():
    problems = []
    for m in mutants.MUTANTS:
        try:
            loc, text = mutants.mutated_text(m, SRC)   # raises unless exactly one match that parses mutated
        except mutants.LocateError as err:
            problems.append(f"{m.id}: {err}")
            continue
        assert text != loc.path.read_text(), m.id
    assert not problems, "\n".join(problems)  # re-target these entries (docs/testing.md)


def test_ids_are_unique_and_every_selection_names_existing_tests():
    ids = [m.id for m in mutants.MUTANTS]
    assert len(ids) == len(set(ids))
    assert {m.id: mutants.missing_tests(m) for m in mutants.MUTANTS if mutants.missing_tests(m)} == {}


@pytest.mark.parametrize("mutant_id", sorted(SNIPPETS))
def test_the_located_mutation_is_the_verbatim_snippets(mutant_id):
    old, new = SNIPPETS[mutant_id]
    holders = [p for p in (SRC / "batlit").rglob("*.py") if old in p.read_text()]
    assert len(holders) == 1 and holders[0].read_text().count(old) == 1, holders
    expected = holders[0].read_text().replace(old, new)
    entry = next(m for m in mutants.MUTANTS if m.id == mutant_id)
    loc, text = mutants.mutated_text(entry, SRC)
    assert loc.path == holders[0]
    assert text == expected


def _package(tmp_path, files: dict[str, str]):
    for rel, code in files.items():
        path = tmp_path / "src" / "batlit" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(code))
    return tmp_path / "src"


def _entry(where, node, new):
    return mutants.M("x", where, node, new, "a mistake", "tests/none.py")


def test_a_reformatted_function_is_still_found_and_only_its_node_changes(tmp_path):
    one_line = _package(tmp_path / "a", {"m.py": """
        def f(x, y):
            return g(x, scale=2) + y * 3
        """})
    wrapped = _package(tmp_path / "b", {"m.py": """
        def f(x, y):
            return (g(x,
                      scale = 2)
                    + (y * 3))
        """})
    entry = _entry("f", "g(x, scale=2)", "g(y, scale=2)")
    assert mutants.mutated_text(entry, one_line)[1].splitlines()[2] == "    return g(y, scale=2) + y * 3"
    assert mutants.mutated_text(entry, wrapped)[1].splitlines()[2:5] == [
        "    return (g(y, scale=2)", "            + (y * 3))"]
    assert mutants.mutated_text(_entry("f", "scale=2", "scale=3"), wrapped)[1].count("scale=3") == 1


def test_a_function_moved_to_another_module_is_found_there(tmp_path):
    before = _package(tmp_path / "a", {"m.py": "class C:\n    def step(self, k):\n        return k + 1\n"})
    after = _package(tmp_path / "b", {"m.py": "X = 1\n", "core/steps.py": "class C:\n    def step(self, k):\n"
                                      "        return k + 1\n"})
    entry = _entry("C.step", "k + 1", "k")
    assert mutants.locate(entry, before).rel == "m.py"
    loc, text = mutants.mutated_text(entry, after)
    assert loc.rel == "core/steps.py" and loc.line == 3 and text.endswith("        return k\n")
    # a module hint still matches once the module moved into a package folder
    assert mutants.locate(_entry("steps.py:C.step", "k + 1", "k"), after).rel == "core/steps.py"


def test_byte_columns_are_read_as_characters(tmp_path):
    src = _package(tmp_path, {"m.py": 'def f(a, b):\n    s = "ε‖"; return a + b\n'})
    assert mutants.mutated_text(_entry("f", "a + b", "a - b"), src)[1] == 'def f(a, b):\n    s = "ε‖"; return a - b\n'


def test_statements_parameters_and_module_names(tmp_path):
    src = _package(tmp_path, {"m.py": """
        LIMIT = 50.0


        def f(x, every: int = 1, *, mode="test"):
            x.update()
            y = x.a
            z = x.b
            return y + z
        """})
    deleted = mutants.mutated_text(_entry("f", "x.update()", ""), src)[1]
    assert deleted.split("def f")[1] == '(x, every: int = 1, *, mode="test"):\n    y = x.a\n    z = x.b\n    return y + z\n'
    swapped = mutants.mutated_text(_entry("f", "y = x.a\nz = x.b", "z = x.b\n    y = x.a"), src)[1]
    assert "    z = x.b\n    y = x.a\n" in swapped
    assert "every: int = 2" in mutants.mutated_text(_entry("f", "every: int = 1", "every: int = 2"), src)[1]
    assert 'mode="val"' in mutants.mutated_text(_entry("f", "mode='test'", 'mode="val"'), src)[1]
    assert "LIMIT = 0.0" in mutants.mutated_text(_entry("LIMIT", "LIMIT = 50.0", "LIMIT = 0.0"), src)[1]


def test_a_deleted_keyword_argument_takes_its_comma(tmp_path):
    src = _package(tmp_path, {"m.py": "def f(x):\n    return g(x, a=1,\n             b=2)\n"})
    assert mutants.mutated_text(_entry("f", "a=1", ""), src)[1] == "def f(x):\n    return g(x, b=2)\n"
    assert mutants.mutated_text(_entry("f", "b=2", ""), src)[1] == "def f(x):\n    return g(x, a=1)\n"


@pytest.mark.parametrize("files,entry,says", [
    ({"m.py": "def f(x):\n    return x + 1\n"}, ("g", "x + 1", "x"), "no function, class or module-level name 'g'"),
    ({"m.py": "def f(x):\n    return x + 1\n"}, ("f", "x + 2", "x"), "occurs 0 times in f"),
    ({"m.py": "def f(x):\n    return (x + 1) * (x + 1)\n"}, ("f", "x + 1", "x"), "occurs 2 times in f"),
    ({"a.py": "def f(x):\n    return x + 1\n", "b.py": "def f(x):\n    return x + 1\n"}, ("f", "x + 1", "x"),
     "'f' is in several modules (a.py, b.py)"),
    ({"m.py": "def f(x):\n    return x + 1\n"}, ("f", "x +", "x"), "is no expression, statement"),
    ({"m.py": "def f(x):\n    return x + 1\n"}, ("f", "x + 1", "x +"), "does not parse"),
])
def test_an_entry_that_does_not_locate_says_why(tmp_path, files, entry, says):
    src = _package(tmp_path, files)
    with pytest.raises(mutants.LocateError, match=says.replace("(", r"\(").replace(")", r"\)")):
        mutants.mutated_text(_entry(*entry), src)


def test_a_module_hint_picks_one_of_two_modules(tmp_path):
    src = _package(tmp_path, {"a.py": "def f(x):\n    return x + 1\n", "b.py": "def f(x):\n    return x + 1\n"})
    loc, text = mutants.mutated_text(_entry("b.py:f", "x + 1", "x - 1"), src)
    assert loc.rel == "b.py" and text == "def f(x):\n    return x - 1\n"


def test_list_names_the_entries_that_no_longer_locate_and_where_their_node_went(tmp_path, monkeypatch, capsys):
    src = _package(tmp_path, {"m.py": "def f(x):\n    return x + 1\n"})
    monkeypatch.setattr(mutants, "SRC", src)
    monkeypatch.setattr(mutants, "MUTANTS", [
        mutants.M("still-here", "f", "x + 1", "x", "a", "tests/conftest.py"),
        mutants.M("moved-away", "g", "x + 1", "x", "b", "tests/conftest.py")])
    assert mutants.main(["--list"]) == 1
    out = capsys.readouterr().out
    assert "still-here" in out and "m.py:2" in out
    assert "moved-away [does not locate]" in out and "moved-away: no function, class or module-level name 'g'" in out
    assert "the node occurs in f (m.py:2)" in out  # where to re-target it
    assert "1 that no longer locate" in out
