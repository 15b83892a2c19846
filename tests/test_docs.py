"""The README stays short and every relative link in it and in docs/ leads somewhere.

The site itself (mkdocs.yml) is built with --strict by `make test` and `make docs`, which also checks
links between the pages of docs/; these tests cover what that build does not see: the README, whose
links are read on GitHub, and a heading that a link names with #anchor.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "ARCHITECTURE.md"
PAGES = sorted((ROOT / "docs").rglob("*.md"))
MAX_README_LINES = 160

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+).*?\1", re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def relative_links(markdown: str) -> list[str]:
    """Targets of the inline links outside code, without web addresses and same-page anchors."""
    prose = CODE_SPAN.sub("", FENCE.sub("", markdown))
    return [target for target in LINK.findall(prose)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) and not target.startswith("#")]


def anchors(markdown: str) -> set[str]:
    """The ids of a page's headings, as MkDocs (Python-Markdown's toc) and, for these headings, GitHub make them."""
    from markdown.extensions.toc import slugify

    prose = FENCE.sub("", markdown)
    return {slugify(CODE_SPAN.sub(lambda m: m.group(0).strip("`"), title), "-") for title in HEADING.findall(prose)}


def test_the_readme_fits_on_a_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines, at most {MAX_README_LINES}: move the detail to a page of docs/ and link it")


@pytest.mark.parametrize("source", [README, ARCHITECTURE, *PAGES], ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_that_exists(source: Path):
    broken = []
    for target in relative_links(source.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        file = (source.parent / path).resolve()
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading with the id '{anchor}' in {file.relative_to(ROOT)}")
    assert not broken, f"{source.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_link_checker_sees_links_and_skips_code():
    text = "[a](docs/a.md) [b](https://x.org) [c](#here) `[d](no.md)`\n```\n[e](no.md)\n```\n[f](b.md#sec \"t\")"
    assert relative_links(text) == ["docs/a.md", "b.md#sec"]
    assert anchors("# Where things live\n## The `runner.yaml` reference\n") == {"where-things-live",
                                                                               "the-runneryaml-reference"}
