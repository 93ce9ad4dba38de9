"""The README and the pages under docs/ hold together: every relative link and anchor resolves, every page is linked.

Links are read from the Markdown outside code (fenced blocks and inline code spans are skipped); a link with a
scheme (``https:``, ``mailto:``) is not followed. An anchor must name a heading of the target page, turned into
an id the way GitHub does it (lower case, punctuation dropped, spaces to hyphens, ``-1``, ``-2`` for repeats).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^ {0,3}(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """The lines of ``path`` outside fenced code blocks, with their numbers."""
    lines, fence = [], None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's id for a heading: link and code markup dropped, lower case, spaces to hyphens, no punctuation."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The ids of every heading of ``path``, repeats numbered as GitHub does."""
    seen: dict[str, int] = {}
    ids = set()
    for _, line in prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        ids.add(base if count == 0 else f"{base}-{count}")
    return ids


def links(path: Path) -> list[tuple[int, str]]:
    """Every link target of ``path`` outside code, with its line number."""
    found = []
    for number, line in prose_lines(path):
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            found.append((number, match.group(1)))
    return found


def test_the_pages_are_found():
    names = {page.name for page in PAGES}
    assert "README.md" in names and "errors.md" in names and "testing.md" in names and len(PAGES) > 5


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for number, target in links(page):
        if SCHEME.match(target):
            continue  # a web address: not checked here
        location, _, anchor = target.partition("#")
        destination = (page.parent / unquote(location)).resolve() if location else page
        where = f"{page.relative_to(ROOT)}:{number}: {target}"
        if not destination.exists():
            broken.append(f"{where}: no such file")
        elif ROOT not in destination.parents and destination != ROOT:
            broken.append(f"{where}: outside the repository")
        elif anchor and destination.suffix == ".md" and unquote(anchor) not in anchors(destination):
            broken.append(f"{where}: no heading with this id in {destination.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("page", PAGES[1:], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_docs_page_has_a_title_a_summary_and_a_link_from_the_readme(page):
    lines = page.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# "), f"{page.name}: the first line must be the page's title"
    assert lines[1] == "" and lines[2] and not lines[2].startswith(("#", "|", "-", "`")), (
        f"{page.name}: the title must be followed by a sentence saying what the page covers"
    )
    readme_targets = {target.partition("#")[0] for _, target in links(ROOT / "README.md")}
    assert f"docs/{page.name}" in readme_targets, f"the README does not link docs/{page.name}"
    back = {(page.parent / target.partition("#")[0]).resolve() for _, target in links(page) if target[0] != "#"}
    assert ROOT / "README.md" in back, f"{page.name} does not link back to the README"


def test_slugs_follow_github():
    assert slug("Chunk size: `batch_size`") == "chunk-size-batch_size"
    assert slug("Errors, warnings and exit status") == "errors-warnings-and-exit-status"
    assert slug("Example: an out-of-distribution detector") == "example-an-out-of-distribution-detector"
    assert slug("Use from Python") == "use-from-python"


def test_a_broken_link_is_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\nSee [there](missing.md), [here](#nowhere) and `[code](not-a-link.md)`.\n\n"
        "```\n[in a block](also-not-a-link.md)\n```\n\n## Somewhere\n",
        encoding="utf-8",
    )
    assert [target for _, target in links(page)] == ["missing.md", "#nowhere"]
    assert anchors(page) == {"page", "somewhere"}
