"""Every relative link in the README, docs/, research/ and the committed result pages leads to a file
that exists and, where it names a section, to a heading that file has: results pages are re-titled
as the product changes, and a reader who follows a dead link from the README is lost."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "research").glob("*.md"),
                *(ROOT / "benchmarks" / "results").rglob("*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCED = re.compile(r"```.*?```", re.S)


def heading_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache  # many links name sections of the same few pages
def anchors(page: Path) -> set[str]:
    return {heading_anchor(m.group(1)) for m in re.finditer(r"^#+ (.*)$", FENCED.sub("", page.read_text()), re.M)}


def broken_links(page: Path) -> list[str]:
    broken = []
    for match in LINK.finditer(FENCED.sub("", page.read_text())):
        link = match.group(1)
        if re.match(r"[a-z]+:", link):  # http:, mailto: ... are not this repository's
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link} (no such file)")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link} (no such section)")
    return broken


def test_heading_anchors_are_githubs():
    assert heading_anchor("Learning from teachers (`--teacher`, compact CNN)") == \
        "learning-from-teachers---teacher-compact-cnn"
    assert heading_anchor("Lite0 as the student of the same teachers (2026-12-07)") == \
        "lite0-as-the-student-of-the-same-teachers-2026-12-07"


def test_a_dead_link_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Present\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#present) [gone](missing.md) [moved](other.md#absent) [web](https://example.org)\n"
                    "```\n[in code](nowhere.md)\n```\n")
    assert broken_links(page) == ["missing.md (no such file)", "other.md#absent (no such section)"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_leads_somewhere(page):
    assert broken_links(page) == []
