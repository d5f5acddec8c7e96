"""The package's shape, read from its source: imports in one direction, small signatures.

These read mlp/*.py with :mod:`ast` (nothing is imported), so they hold for
every module, including code paths that no other test runs.
"""

import ast
import os
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "mlp"
MODULES = {p.stem: p for p in sorted(PACKAGE.glob("*.py"))}
#: scikit-learn requires the estimators' __init__ to list every parameter explicitly
MAX_PARAMETERS = 10
EXPLICIT_SIGNATURES = {("estimators", "__init__")}


def tree(name):
    return ast.parse(MODULES[name].read_text(encoding="utf-8"), filename=str(MODULES[name]))


def mlp_imports(name):
    """{module: [line, …]} of the mlp modules that module ``name`` imports, anywhere in it."""
    found = {}
    for node in ast.walk(tree(name)):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:                  # from .x import …
                targets = [node.module.split(".")[0]]
            elif node.level == 1:                                # from . import x, y
                targets = [a.name for a in node.names]
            elif node.module and node.module.split(".")[0] == "mlp":
                parts = node.module.split(".")
                targets = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name.split(".")[1] for a in node.names
                       if a.name.startswith("mlp.")]
        for t in targets:
            if t in MODULES and t != name:
                found.setdefault(t, []).append(node.lineno)
    return found


def graph():
    return {name: set(mlp_imports(name)) for name in MODULES}


def find_cycle(g):
    """One import cycle of the graph ``g`` as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(g[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, path + [nxt])
                if cycle:
                    return cycle
        state[node] = "done"
        return None
    for start in sorted(g):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    g = graph()
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    g["kernels"] = g["kernels"] | {"kernels_reference"}
    assert find_cycle(g) is not None


def test_mlp_modules_import_each_other_in_one_direction():
    assert find_cycle(graph()) is None, f"import cycle: {' -> '.join(find_cycle(graph()))}"


def test_the_kernels_import_nothing_from_mlp():
    """The reference never depends on Numba: the kernels' twins live in kernels_reference."""
    assert mlp_imports("kernels") == {}


def local_imports(name):
    """(function, line) of every import inside a function of module ``name``."""
    out = []
    for fn in ast.walk(tree(name)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    out.append((fn.name, node.lineno))
    return out


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_function_local_import_says_why(name):
    """A function-local import says why, in a comment.

    An import inside a function keeps Numba or an optional package out of a
    path: a comment says which.
    """
    lines = MODULES[name].read_text(encoding="utf-8").splitlines()
    silent = [f"{name}.py:{line} (in {fn})" for fn, line in local_imports(name)
              if "#" not in lines[line - 1] and not lines[line - 2].lstrip().startswith("#")]
    assert not silent, "function-local imports without a reason: " + ", ".join(silent)


def parameter_count(fn):
    a = fn.args
    return (len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
            + (a.vararg is not None) + (a.kwarg is not None))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_function_takes_more_than_ten_parameters(name):
    """Bundles (NamedTuples, objects) instead of long positional lists: a new setting is a field."""
    long = [f"{name}.py:{fn.lineno} {fn.name} ({parameter_count(fn)})"
            for fn in ast.walk(tree(name))
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            and parameter_count(fn) > MAX_PARAMETERS
            and (name, getattr(fn, "name", "")) not in EXPLICIT_SIGNATURES]
    assert not long, "functions with more than 10 parameters: " + ", ".join(long)


def test_networks_are_built_through_their_constructors():
    """``Network.from_arrays`` wraps existing arrays; nothing builds a half-initialised object."""
    users = [f"{name}.py:{node.lineno}" for name in MODULES for node in ast.walk(tree(name))
             if isinstance(node, ast.Attribute) and node.attr == "__new__"
             and isinstance(node.value, ast.Name) and node.value.id == "object"]
    assert not users


def test_the_estimators_module_stays_small():
    """Its training policy lives in estimator_training.py, in named pieces."""
    assert len(MODULES["estimators"].read_text(encoding="utf-8").splitlines()) < 500


def test_pytest_n_auto_runs_one_worker_per_core_at_most_four(monkeypatch):
    """README's `pytest -n auto`: the workers tests/conftest.py asks pytest-xdist for."""
    import importlib.util  # here: the one test that loads conftest.py as a module
    spec = importlib.util.spec_from_file_location("_conftest", pathlib.Path(__file__).with_name(
        "conftest.py"))
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    for cores, workers in [(None, 1), (1, 1), (2, 2), (4, 4), (64, 4)]:
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert conftest.pytest_xdist_auto_num_workers(config=None) == workers
