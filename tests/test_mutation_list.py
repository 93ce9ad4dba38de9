"""The mutation check's list (tests/mutations.py) stays applicable, and docs/testing.md shows it as it is.

The check itself runs outside pytest (``python tests/mutations.py --quick`` in CI, the full list on demand);
this only guards the list: every planted text still occurs exactly once in its source file, every test it names
exists, and the documented table is the list's own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from mutations import MUTATIONS, ROOT, markdown_table

AREAS = {"maths", "passes", "initialisation", "repairs", "trainer", "distribution", "online", "files", "compatibility"}
# the six bugs issue 12 found that no test caught, by name
HEADLINE = {
    "chunk-rows-whole-data",
    "no-float64-flush",
    "data-not-centred",
    "converge-across-repair",
    "no-lloyd",
    "no-seed-broadcast",
}


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_the_list_is_long_and_named_once():
    names = [m.name for m in MUTATIONS]
    assert len(names) == len(set(names))
    assert HEADLINE <= set(names) and len(names) >= len(HEADLINE) + 15
    assert {m.area for m in MUTATIONS} == AREAS
    quick = {m.name for m in MUTATIONS if m.quick}
    assert HEADLINE <= quick


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_every_mutation_applies_and_names_existing_tests(mutation):
    source = (ROOT / mutation.path).read_text()
    assert source.count(mutation.old) == 1, f"{mutation.name}: its text must occur exactly once in {mutation.path}"
    assert mutation.new != mutation.old and mutation.tests and mutation.why
    for selection in mutation.tests:
        path, _, test = selection.partition("::")
        assert (ROOT / path).is_file(), selection
        if test:
            assert test.split("[")[0] in _test_functions(ROOT / path), selection


def test_docs_show_the_current_list():
    docs = (ROOT / "docs" / "testing.md").read_text()
    assert markdown_table() in docs, "regenerate the table: python tests/mutations.py --markdown"
