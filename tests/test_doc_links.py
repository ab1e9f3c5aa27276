"""Every relative link in README.md and docs/**/*.md resolves: the file it names exists, and a
``#fragment`` names a heading of that file (GitHub's anchors). Docs move between files; a link
left pointing at the old place is found here, not by a reader."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(30)

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
# [text](target) or ![alt](target "title"); reference definitions: [label]: target
_INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _prose(text: str) -> str:
    """The text a reader sees as links: code blocks and code spans are examples, not links."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but hyphens dropped, spaces as hyphens,
    a repeated heading numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", plain.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of ``doc`` that names a missing file or a missing heading."""
    text = doc.read_text(encoding="utf-8")
    prose = _prose(text)
    broken = []
    for target in [*_INLINE.findall(prose), *_REFERENCE.findall(prose)]:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("//"):
            continue  # http:, https:, mailto:: not ours to check offline
        path_part, _, fragment = target.partition("#")
        path = (doc.parent / unquote(path_part)).resolve() if path_part else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif root.resolve() not in path.parents and path != root.resolve():
            broken.append(f"{target}: outside the repository")
        elif fragment and path.suffix == ".md" and unquote(fragment).lower() not in anchors(path.read_text("utf-8")):
            broken.append(f"{target}: no heading #{fragment} in {path.name}")
    return broken


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path) -> None:
    assert broken_links(doc) == []


def test_a_link_to_a_missing_file_or_heading_is_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## Local activities (v2)\n\n## Local activities (v2)\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/guide.md) [ok](docs/guide.md#local-activities-v2) [ok](docs/guide.md#local-activities-v2-1)\n"
        "[ok](https://example.com/x.md) [ok](#top) `[code](docs/nowhere.md)`\n"
        "```\n[code](docs/nowhere.md)\n```\n"
        "# Top\n[gone](docs/old.md) ![gone](docs/shot.png) [gone](docs/guide.md#local-activities)\n"
        "[gone]: ../outside.md\n",
    )
    (tmp_path.parent / "outside.md").write_text("# Outside\n")
    assert broken_links(readme, root=tmp_path) == [
        "docs/old.md: no such file",
        "docs/shot.png: no such file",
        "docs/guide.md#local-activities: no heading #local-activities in guide.md",
        "../outside.md: outside the repository",
    ]
    assert doc_files(tmp_path) == [readme, tmp_path / "docs" / "guide.md"]
