"""The README is a map and docs/ holds the rest: every relative link of both resolves (file and
heading), every verb has its line, and the README stays at most 250 lines."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from qbench.harness.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {slug(m) for m in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    for href in LINK.findall(text):
        if re.match(r"^[a-z]+:", href):
            continue
        path, _, anchor = href.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {href} does not exist"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target), f"{page.name}: {href}: no such heading"


def test_the_readme_is_a_map() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    [verbs] = [a.choices for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    lines = [line for line in readme.splitlines() if line.startswith("- `")]
    for verb in verbs:
        [line] = [line for line in lines if line.startswith(f"- `{verb}`:")]
        assert re.search(r"→ \[docs/\w[\w-]*\.md\]\(docs/\w[\w-]*\.md\)$", line), line
    for journey in ("Reproduce the claims", "Benchmark your own queue", "Load-test", "Gate a change in CI"):
        section = readme.split(f"## {journey}\n", 1)[1].split("\n## ", 1)[0]
        assert section.strip().splitlines()[-1].startswith("→ [docs/"), journey


def test_every_docs_page_is_in_the_index() -> None:
    index = (REPO / "docs" / "index.md").read_text()
    for page in PAGES[1:]:
        if page.name != "index.md":
            assert f"]({page.name})" in index, page.name
