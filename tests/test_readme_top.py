"""README's top lets a new user in: its first commands are the install and the test command
``.ci/run`` runs, its table of contents lists every section, and its list of docs names every
page under docs/. A section or page added without its line is found here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_doc_links import anchors

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(30)


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n") + len(heading) + 5
    end = text.find("\n## ", start)
    return text[start:end if end >= 0 else len(text)]


def first_commands(readme: str) -> list[str]:
    """The lines of README's first code block, comments left out."""
    block = re.search(r"^```sh\n(.*?)^```", readme, re.MULTILINE | re.DOTALL)
    assert block is not None, "README has no sh block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def ci_commands(ci: str) -> list[str]:
    """The install and test lines of .ci/run, with pip's -q (output only) left out."""
    lines = [line.strip() for line in ci.splitlines()]
    return [line.replace("pip install -q ", "pip install ") for line in lines
            if line.startswith("python3 -m venv") or line.startswith(".venv/bin/python -m pytest")]


def contents_missing(readme: str) -> list[str]:
    """Sections (## and ###, outside code) that README's Contents does not link, in order."""
    body = re.sub(r"^```.*?^```", "", readme, flags=re.MULTILINE | re.DOTALL)
    listed = re.findall(r"\]\(#([^)]+)\)", _section(readme, "Contents"))
    headings = [h for h in anchors(body[body.index("\n## Contents\n") + 1:]) if h != "contents"]
    return sorted(set(headings) - set(listed))


def docs_missing(readme: str, root: Path = ROOT) -> list[str]:
    listed = set(re.findall(r"\]\((docs/[^)#]+)\)", _section(readme, "Documentation")))
    pages = {str(p.relative_to(root)) for p in (root / "docs").glob("*.md")} | {"docs/decisions/README.md"}
    return sorted(pages - listed)


def test_the_first_commands_are_the_install_and_the_test_of_ci() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    install, run, test = first_commands(readme)
    assert [install, test] == ci_commands((ROOT / ".ci" / "run").read_text(encoding="utf-8"))
    assert run == ".venv/bin/kadence dev --sample"


def test_contents_lists_every_section_and_documentation_every_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert contents_missing(readme) == []
    assert docs_missing(readme) == []


def test_a_section_or_page_left_out_is_found(tmp_path: Path) -> None:
    readme = ("# K\n\n```sh\ninstall  # it\nrun\ntest\n```\n\n## Contents\n\n- [Run](#run)\n\n"
              "## Documentation\n\n- [a](docs/a.md)\n\n## Run\n\n```\n## not a heading\n```\n\n### Run `fast`\n\n"
              "## Tests\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n")
    (tmp_path / "docs" / "b.md").write_text("# B\n")
    assert first_commands(readme) == ["install", "run", "test"]
    assert contents_missing(readme) == ["documentation", "run-fast", "tests"]
    assert docs_missing(readme, tmp_path) == ["docs/b.md", "docs/decisions/README.md"]
    assert ci_commands("set -e\npython3 -m venv .venv && .venv/bin/pip install -q -e '.[x]'\n"
                       "apt-get install chromium\n.venv/bin/python -m pytest\n") == [
        "python3 -m venv .venv && .venv/bin/pip install -e '.[x]'", ".venv/bin/python -m pytest"]
