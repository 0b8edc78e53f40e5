"""The shape of the code a newcomer reads: no import cycles, each layer importing only itself and the
layers below it, modules and functions of a readable size, the README's layout naming every module,
and the library free of Dagster: no Dagster import (tests/test_cli.py), no Dagster words or asset names
in what it says."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from tests.paths import REPO

PACKAGES = ("gpt2train", "assets", "pipelines", "evals")
# Bottom to top: a module imports only modules of its own layer and of the layers below it. The
# library speaks of models and data; evals/ scores them; assets/ and pipelines/ are the Dagster side.
LAYERS = ("gpt2train", "evals", "assets", "pipelines")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _modules(package: str, root: Path = REPO) -> dict[str, Path]:
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
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


def _import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """{module: the other modules of PACKAGES it imports when it runs}, for the packages under `root`."""
    known = {name: path for package in PACKAGES for name, path in _modules(package, root).items()}
    return {name: _imports(path, known) - {name} for name, path in known.items()}


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
    graph = _import_graph()
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def _upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every `importer -> imported` of `graph` whose imported module is in a higher layer than its importer."""
    layer = {package: i for i, package in enumerate(LAYERS)}
    return sorted(f"{m} -> {n}" for m, imported in graph.items() for n in imported
                  if layer[n.split(".")[0]] > layer[m.split(".")[0]])


def test_each_layer_imports_only_its_own_and_those_below(tmp_path):
    """gpt2train < evals < assets < pipelines, counting imports inside functions too (a lazy import is
    still a dependency), not those only a type checker reads."""
    fake = {"gpt2train/plots.py": "from evals.published import baseline_lines\n", "evals/published.py": "",
            "assets/training.py": "def launch():\n    import pipelines.slurm_pipes\n",
            "pipelines/slurm_pipes.py": "import assets.training\nimport evals.published\n"}
    for name, text in fake.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    assert _upward_imports(_import_graph(tmp_path)) == [  # the check finds both, and only them
        "assets.training -> pipelines.slurm_pipes", "gpt2train.plots -> evals.published"]
    upward = _upward_imports(_import_graph())
    assert not upward, f"imports of a layer above the importer's ({' < '.join(LAYERS)}): {upward}"


# What the library must not say (its messages, log lines, scripts): Dagster's words. An asset's own
# name is matched as a whole word where it has an underscore (`training_run`); one that is also a
# plain word (`corpus`, `checkpoints`) only in backticks or followed by "asset" or "partition(s)".
DAGSTER_WORDS = re.compile(r"materiali[sz]|dagster", re.IGNORECASE)


def _definition_names() -> set[str]:
    """The names the Definitions give: assets, their partition sets, jobs and sensors."""
    from gpt2train.config import load_config
    from pipelines.definitions import build_definitions

    defs = build_definitions(load_config("tiny"))
    graph = defs.resolve_asset_graph()
    names = {s.name for s in defs.sensors} | {j.name for j in defs.jobs}
    for key in graph.get_all_asset_keys():
        names.add(key.to_user_string())
        names.add(getattr(graph.get(key).partitions_def, "name", None))
    return names - {None}


def _name_pattern(names: set[str]) -> re.Pattern:
    snake = [re.escape(n) for n in sorted(names) if "_" in n]
    plain = [re.escape(n) for n in sorted(names) if "_" not in n]
    return re.compile(rf"\b(?:{'|'.join(snake)})\b|`(?:{'|'.join(plain)})`|\b(?:{'|'.join(plain)}) "
                      rf"(?:asset|partitions?)\b")


def _said(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, text) of every string literal of `tree` but documentation (a string statement: a docstring,
    an attribute's docstring); an f-string as one text, each replacement field written `{}`."""
    documentation = {id(n.value) for n in ast.walk(tree)
                     if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    inside = {id(sub) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for sub in ast.walk(n) if sub is not n}
    for node in ast.walk(tree):
        if id(node) in documentation or id(node) in inside:
            continue
        if isinstance(node, ast.JoinedStr):
            yield node.lineno, "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def _dagster_talk(tree: ast.AST, names: re.Pattern) -> list[tuple[int, str]]:
    """What `tree` says in Dagster's words: any string naming Dagster or materializing, and any string
    with a space (a sentence, not an identifier) that names an asset. A one-word string is left alone:
    the lineage records keep their artifact tags (`"artifact": "hf_export"`), and a failpoint its name."""
    return [(line, text) for line, text in _said(tree)
            if DAGSTER_WORDS.search(text) or (re.search(r"\s", text) and names.search(text))]


def test_the_library_speaks_of_models_and_data_not_of_dagster():
    """Whoever launches the library's work (its CLI, a Dagster asset, a Slurm job) reads the same messages,
    so they name data and models, never an asset, a materialization or a Dagster run."""
    names = _name_pattern(_definition_names())
    sample = ast.parse('"""Docstrings may say training_run."""\nx = "hf_export"\ny = f"{x}: materialize it"\n'
                       'y = f"rerun `corpus` for {x}"\ny = "the token_shards of a file"\ny = "a corpus record"\n')
    assert [line for line, _ in _dagster_talk(sample, names)] == [3, 4, 5]  # the check finds them, and only them
    found = []
    for path in _modules("gpt2train").values():
        found += [f"{path.relative_to(REPO)}:{line}: {text!r}" for line, text in _dagster_talk(
            ast.parse(path.read_text()), names)]
    assert not found, "the library names Dagster or its assets:\n" + "\n".join(found)


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
