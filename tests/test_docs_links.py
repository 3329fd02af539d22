"""The README and the documents under resources/docs/ hold together.

Every relative link and image in them points to a file that exists, and every #anchor to a
heading of the file it names (GitHub's slugs), so a moved document or a renamed heading
cannot leave a dead link behind. The README stays short enough for a newcomer to read, and it
links to every document.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "resources" / "docs"
README_MAX_LINES = 220

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") and ![alt](target); text may hold `code` and one level of brackets.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HTML_SOURCE = re.compile(r"<(?:img|a)\s[^>]*?(?:src|href)=\"([^\"]+)\"", re.IGNORECASE)
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def documents() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _prose_lines(path: Path) -> list[tuple[int, str]]:
    """The file's lines outside fenced code blocks, numbered from 1."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub gives the file's headings; a repeated slug gets -1, -2, ..."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in _prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) for every link and image outside code."""
    found = []
    for number, line in _prose_lines(path):
        prose = INLINE_CODE.sub("", line)
        targets = LINK.findall(prose) + HTML_SOURCE.findall(prose)
        reference = REFERENCE.match(prose)
        if reference:
            targets.append(reference.group(1))
        found.extend((number, target) for target in targets)
    return found


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def broken_links(path: Path) -> list[str]:
    problems = []
    for number, target in links(path):
        if EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        where = f"{_shown(path)}:{number}: {target}"
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if file_part.startswith("/"):
            problems.append(f"{where} (absolute path; use one relative to the file)")
        elif not linked.exists():
            problems.append(f"{where} (no such file: {linked})")
        elif anchor and linked.suffix == ".md" and unquote(anchor) not in anchors(linked):
            problems.append(f"{where} (no heading #{anchor} in {linked.name})")
    return problems


@pytest.mark.parametrize("path", documents(), ids=lambda path: path.name)
def test_every_relative_link_and_image_resolves(path: Path) -> None:
    assert broken_links(path) == []


def test_the_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_the_readme_links_every_document() -> None:
    docs = sorted(DOCS.glob("*.md"))
    linked = {
        (README.parent / unquote(target.partition("#")[0])).resolve()
        for _, target in links(README)
        if not EXTERNAL.match(target)
    }
    assert docs, "no documents under resources/docs/"
    assert [doc.name for doc in docs if doc.resolve() not in linked] == []


@pytest.mark.parametrize("path", sorted(DOCS.glob("*.md")), ids=lambda path: path.name)
def test_each_document_has_a_title_and_a_way_back(path: Path) -> None:
    prose = _prose_lines(path)
    assert prose and prose[0][1].startswith("# "), f"{path.name} does not start with a title"
    back = {(path.parent / target.partition("#")[0]).resolve() for _, target in links(path)}
    assert README.resolve() in back, f"{path.name} has no link back to the README"


def test_the_checker_catches_what_it_should(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "there.png").write_bytes(b"")
    page.write_text(
        "# A title\n\n## The `easel` command\n\n## Numbers\n\n### Numbers\n\n"
        "![ok](there.png) ![gone](missing.png) [ok](#the-easel-command) [ok](#numbers-1)\n"
        "[gone](#numbers-2) [ok](page.md#a-title) [gone](page.md#no-title)\n"
        "[web](https://example.com/x.md) `[code](missing.md)`\n\n"
        "```\n[fenced](missing.md)\n```\n",
        encoding="utf-8",
    )
    problems = broken_links(page)
    assert [problem.split(": ", 1)[1].split(" (")[0] for problem in problems] == [
        "missing.png",
        "#numbers-2",
        "page.md#no-title",
    ]
