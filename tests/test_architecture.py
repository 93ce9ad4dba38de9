"""The shape of the package (docs/architecture.md): no import cycles, small modules, each saying what it owns.

Static checks over the source with ``ast``: every ``import`` of a torchgmm module, at the top of a module or
inside a function, is an edge of the import graph, which must have no cycle; modules stay under a size limit in
lines of code (docstrings, comments and blank lines aside); every module opens with a docstring that says what
it owns and what it must not do; and the module map of docs/architecture.md lists every module there is.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "torchgmm"
MAX_LINES = 500
MAX_LINES_ESTIMATOR = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """The torchgmm modules ``name`` imports, anywhere in its source."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("torchgmm")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if not base.startswith("torchgmm"):
                continue
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in MODULES else base)
    found.discard(name)
    return {m for m in found if m in MODULES}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycle() -> list[str] | None:
    """One import cycle of the graph, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for child in sorted(GRAPH[node]):
            if child == "torchgmm":  # the package's own __init__ only re-exports; importing it is not a cycle
                continue
            if state.get(child) == 1:
                return path[path.index(child) :] + [child]
            if child not in state and (found := visit(child)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles_function_level_imports_included():
    assert _cycle() is None, " -> ".join(_cycle())


def test_modules_import_the_package_only_for_its_public_names():
    """No module imports ``torchgmm`` itself (which imports everything): that would hide a cycle."""
    offenders = [name for name, imports in GRAPH.items() if "torchgmm" in imports and name != "torchgmm"]
    assert offenders == []


def code_lines(path: Path) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    source = path.read_text()
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings |= set(range(first.lineno, first.end_lineno + 1))
    lines = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            lines |= set(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_are_small(name):
    limit = MAX_LINES_ESTIMATOR if name == "torchgmm.estimator" else MAX_LINES
    assert code_lines(MODULES[name]) <= limit


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_says_what_it_owns_and_must_not_do(name):
    docstring = ast.get_docstring(ast.parse(MODULES[name].read_text())) or ""
    if name.endswith("__main__") or name == "torchgmm":
        assert docstring, f"{name} has no docstring"
        return
    assert "Owns" in docstring and "Must not" in docstring, f"{name}'s docstring must say what it owns and must not do"


def test_the_architecture_page_maps_every_module():
    page = (ROOT / "docs" / "architecture.md").read_text()
    missing = [name for name in MODULES if name != "torchgmm" and f"`{name.removeprefix('torchgmm.')}`" not in page]
    assert missing == [], f"docs/architecture.md does not list {missing}"
