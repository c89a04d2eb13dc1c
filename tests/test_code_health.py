"""The house rules that keep pricer readable, checked on the source itself.

- the entry scripts stay recipes: train.py <= 300 lines with train() <= 100, evaluate.py <= 250;
- no function outside tests/ is longer than 60 lines (train.py's train(), the recipe, has its own limit);
- nothing but tests imports an entry script, and bench/ is a package (no sys.path edits);
- bench/ holds only benchmarks: each bench/*.py runs as `python -m bench.<name>` (helpers live in bench/common);
- evaluation/ stands above predictors/: no module of predictors/ imports evaluation, at the top or in a function;
- no issue numbers or round names in code, scripts, configs or file names.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
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
        if path.relative_to(REPO).parts[0] == "bench" and "sys.path.insert" in path.read_text():
            offenders.append(f"{path.relative_to(REPO)} edits sys.path")
    assert not offenders, offenders


def runs_on_its_own(tree: ast.Module) -> bool:
    """An `if __name__ == "__main__":` block at the top level of a module (what `python -m` runs)."""
    for node in tree.body:
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
                and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators)):
            return True
    return False


def test_bench_holds_only_benchmarks():
    """`ls bench` shows what can be run: every bench/*.py but __init__.py is a benchmark (a docstring saying what
    it measures, and an `if __name__ == "__main__"` block); what the benchmarks share lives in bench/common."""
    offenders = []
    for path in sorted((REPO / "bench").glob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        if not ast.get_docstring(tree):
            offenders.append(f"{path.relative_to(REPO)} has no module docstring")
        if not runs_on_its_own(tree):
            offenders.append(f"{path.relative_to(REPO)} is not run on its own (no __main__ block): move it to bench/common")
    assert not offenders, offenders


def imported_modules(path: Path) -> list[str]:
    """Every module a file imports, wherever the import stands (top level or inside a function)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_predictors_import_nothing_from_evaluation():
    """The harness runs the predictors, never the other way round: what a predictor needs (the hit rule, the
    calibrated margin) lives in predictors/, and evaluation/ imports it from there."""
    offenders = [f"{path.relative_to(REPO)} imports {name}" for path in sorted((REPO / "predictors").rglob("*.py"))
                 for name in imported_modules(path) if name.split(".")[0] == "evaluation"]
    assert not offenders, offenders


def test_importing_predictors_loads_no_evaluation():
    code = ("import sys, predictors; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'evaluation'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


WORK_LOG = re.compile(r"\bissue ?#?\d|\bround ?\d|\b(first|second|third|fourth|fifth|next|last|\d+(st|nd|rd|th)) round\b",
                      re.IGNORECASE)


def test_no_issue_numbers_or_round_names():
    """Code, scripts and configs say what they do, not which piece of work made them: no issue numbers, no
    numbered or ordinal rounds of work, no file named after either (rounding numbers is fine). The story lives
    in git, the figures in bench/RESULTS.md."""
    files = [p for p in REPO.rglob("*") if p.suffix in (".py", ".sh", ".yaml") and not any(
        part in ("runs", "wandb") or part.startswith(".") for part in p.relative_to(REPO).parts)]
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()[:80]}" for p in files
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if WORK_LOG.search(line)]
    named = [str(p.relative_to(REPO)) for p in REPO.rglob("*") if re.search(r"issue ?\d|round", p.name, re.IGNORECASE)
             and not any(part.startswith(".") or part in ("runs", "wandb") for part in p.relative_to(REPO).parts)]
    assert not hits and not named, hits + named
