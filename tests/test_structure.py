"""The shape of the code a newcomer reads: no import cycles, modules and functions of a readable
size, the README's layout naming every module, and the library free of Dagster (tests/test_cli.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.paths import REPO

PACKAGES = ("gpt2train", "assets", "pipelines", "evals")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((REPO / package).rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of `known` that `path` imports when it runs, at the top or inside a function alike
    (not those under `if TYPE_CHECKING:`, which only a type checker reads)."""
    tree = ast.parse(path.read_text())
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                 for stmt in block.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found.update(n for n in names if n in known)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, as the list of modules along it, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycles():
    """Counting imports inside functions too: a lazy import hides a cycle, it does not remove it."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]  # the finder finds
    known = {name: path for package in PACKAGES for name, path in _modules(package).items()}
    graph = {name: _imports(path, known) - {name} for name, path in known.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_modules_and_functions_stay_readable():
    long = []
    for package in PACKAGES:
        for name, path in _modules(package).items():
            text = path.read_text()
            if text.count("\n") > MAX_MODULE_LINES:
                long.append(f"{name}: {text.count(chr(10))} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, f"over {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} a function: {long}"


def test_the_readme_layout_names_every_module():
    readme = (REPO / "README.md").read_text()
    layout = re.search(r"^## Layout\n(.*?)^## ", readme + "\n## ", re.S | re.M)[1]
    missing = []
    for package in PACKAGES:
        for name, path in _modules(package).items():
            if path.name == "__init__.py":
                continue
            if not re.search(rf"(?<![\w.]){re.escape(path.stem)}(?![\w])", layout):
                missing.append(str(path.relative_to(REPO)))
    assert not missing, f"README.md's Layout does not name: {missing}"


def test_the_code_location_imports_no_torch():
    """Every run worker imports the code location before its run starts: torch, transformers and
    lm-eval (~3.5 s and more on these machines) belong to the steps that use them, not to that import."""
    import subprocess
    import sys

    heavy = ["torch", "transformers", "lm_eval", "matplotlib", "pyarrow"]
    probe = f"import sys, pipelines.definitions; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"importing pipelines.definitions loads {out.stdout.strip()}"
