"""The command-line plumbing (`myol_keras.cli`) and the rule that only entry points use it (docs/DECISIONS.md §3, issue 16).

The rule, checked on the source: library functions raise `ValueError` /
`FileNotFoundError`, never `cli.UsageError`; they never read `FLAGS` (only a
tool's `_run`, called by its `main`); no module imports another module's
private names; the import graph of `myol_keras` has no cycle.
"""

import ast
import pathlib

import pytest
from absl import flags

from myol_keras import cli

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "myol_keras"
# The modules that turn exceptions into exit status 2 (no module may bring a UsageError class back).
ENTRY_POINT_PLUMBING = {"main.py", "cli.py"}
# Private names allowed to cross modules: none.
KNOWN_PRIVATE_IMPORTS = set()


def _sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text())


def _module_name(relative):
    parts = relative[:-3].split("/")
    return ".".join(["myol_keras"] + (parts[:-1] if parts[-1] == "__init__" else parts))


# --- flag parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [("8/255", 8 / 255), ("0.03", 0.03), (" 1/4 ", 0.25), ("2", 2.0)])
def test_parse_fraction(text, value):
    assert cli.parse_fraction(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["x", "1/0", "nan", "inf", ""])
def test_parse_fraction_raises_value_error_not_usage_error(text):
    with pytest.raises(ValueError, match="as a finite number") as error:
        cli.parse_fraction(text, "pgd_eps")
    assert type(error.value) in (ValueError, FileNotFoundError)
    assert "--pgd_eps" in str(error.value)


def test_fraction_and_list_flags_are_bounded_by_absl():
    values = flags.FlagValues()
    cli.DEFINE_fraction("eps", "4/255", "eps", values, lower_bound=0, upper_bound=1, hint="write 8/255")
    cli.DEFINE_list_of("steps", ["8", "16"], "steps", flags.IntegerParser(lower_bound=1), values)
    values(["prog"])
    assert values.eps == pytest.approx(4 / 255) and values.steps == [8, 16]
    assert values["eps"].default_as_str == "'4/255'"  # help shows what the user would write
    for argv, message in ((["--eps=1.5"], r"flag --eps=1.5: 1.5 is not a number in the range \[0, 1\] \(write 8/255\)"),
                          (["--steps=8,0"], r"flag --steps=8,0: 0 is not a positive integer")):
        values.unparse_flags()
        with pytest.raises(flags.IllegalFlagValueError, match=message):
            values(["prog", *argv])


def test_call_with_flags_passes_the_flags_named_after_the_arguments():
    values = flags.FlagValues()
    flags.DEFINE_integer("batch_size", 8, "", flag_values=values)
    flags.DEFINE_string("unrelated", "x", "", flag_values=values)
    values(["prog", "--batch_size=4"])

    def function(path="p", batch_size=1, verbose=True):
        return path, batch_size, verbose

    assert cli.call_with_flags(function, values, path="q") == ("q", 4, True)


# --- the layering rule, on the source --------------------------------------------------------


def test_only_the_entry_point_plumbing_names_usage_error():
    offenders = [name for name, tree in _sources() if name not in ENTRY_POINT_PLUMBING
                 and any(isinstance(n, (ast.Name, ast.Attribute)) and getattr(n, "id", getattr(n, "attr", None))
                         == "UsageError" for n in ast.walk(tree))]
    assert offenders == []


def test_flags_and_cli_are_used_only_by_run_and_main():
    offenders = []
    for name, tree in _sources():
        if name in ENTRY_POINT_PLUMBING:
            continue
        for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            if function.name in ("_run", "main"):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Name) and node.id in ("FLAGS", "cli"):
                    offenders.append(f"{name}:{node.lineno} {function.name} uses {node.id}")
    assert offenders == []


def test_library_cores_do_not_import_cli():
    for name in ("preprocessing.py", "export/saved_model.py", "export/encoder.py", "rundir.py", "evaluation/common.py",
                 "evaluation/features.py", "config.py", "training.py", "ema.py", "checkpoint.py", "callbacks.py",
                 "methods/base.py", *(f"data/{p.name}" for p in sorted((PACKAGE / "data").glob("*.py")))):
        tree = ast.parse((PACKAGE / name).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "cli" not in imported and "myol_keras.cli" not in imported | modules, name


def test_no_module_imports_a_private_name_of_another():
    found = set()
    for name, tree in _sources():
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("myol_keras"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.add((name, alias.name))
                    aliases[alias.asname or alias.name] = True
            elif isinstance(node, ast.Import):
                aliases.update({(a.asname or a.name.split(".")[0]): True for a in node.names
                                if a.name.startswith("myol_keras")})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.add((name, node.attr))
    assert found - KNOWN_PRIVATE_IMPORTS == set()


def test_the_import_graph_has_no_cycle():
    modules = {_module_name(name): tree for name, tree in _sources()}
    graph = {m: set() for m in modules}
    for module, tree in modules.items():
        for node in ast.walk(tree):  # function-level (lazy) imports count too
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                children = [f"{node.module}.{a.name}" for a in node.names]
                targets = children if all(c in modules for c in children) else [node.module, *children]
            else:
                continue
            graph[module].update(t for t in targets if t in modules and t != module)
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
