"""The house rules that keep pricer readable, checked on the source itself.

- the entry scripts stay recipes: train.py <= 300 lines with train() <= 100, evaluate.py <= 250;
- no function outside tests/ is longer than 60 lines (train.py's train(), the recipe, has its own limit);
- nothing but tests imports an entry script, and bench/ is a package (no sys.path edits).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENTRY_SCRIPTS = ("train", "evaluate", "predict", "demo")
SKIP = {"tests", "runs", "wandb"}


def sources() -> list[Path]:
    """Every Python file of the product and the benchmarks."""
    return sorted(p for p in REPO.rglob("*.py") if not any(
        part in SKIP or part.startswith(".") for part in p.relative_to(REPO).parts))


def functions(path: Path):
    """(qualified name, line count) of every function in a file, nested and methods included."""
    tree = ast.parse(path.read_text())
    stack = [(node, "") for node in tree.body]
    while stack:
        node, prefix = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = prefix + node.name
            if not isinstance(node, ast.ClassDef):
                yield name, node.end_lineno - node.lineno + 1
            stack += [(child, name + ".") for child in node.body]


def test_no_function_over_60_lines():
    long = [f"{p.relative_to(REPO)}:{name} ({n} lines)" for p in sources() for name, n in functions(p)
            if n > 60 and (p.name, name) != ("train.py", "train")]
    assert not long, "functions over 60 lines: " + ", ".join(long)


@pytest.mark.parametrize("script, limit, function, function_limit", [
    ("train.py", 300, "train", 100), ("evaluate.py", 250, None, None), ("predict.py", 250, None, None)])
def test_entry_scripts_stay_short(script, limit, function, function_limit):
    path = REPO / script
    assert len(path.read_text().splitlines()) <= limit
    if function:
        assert dict(functions(path))[function] <= function_limit


def test_nothing_imports_an_entry_script_and_bench_is_a_package():
    offenders = []
    for path in sources():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{path.relative_to(REPO)} imports {n}" for n in names if n in ENTRY_SCRIPTS]
        if path.parts[-2] == "bench" and "sys.path.insert" in path.read_text():
            offenders.append(f"{path.relative_to(REPO)} edits sys.path")
    assert not offenders, offenders
