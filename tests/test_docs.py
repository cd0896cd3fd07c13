"""The documentation refers to things that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_every_test_named_in_the_reliability_page_exists() -> None:
    page = (ROOT / "docs" / "reliability.md").read_text()
    cited = set(re.findall(r"`(?:[\w/]+\.py::)?(test_\w+)", page))
    defined = {
        match
        for path in (ROOT / "tests").glob("test_*.py")
        for match in re.findall(r"^def (test_\w+)", path.read_text(), re.MULTILINE)
    }
    assert len(cited) > 20
    assert cited - defined == set()


def test_relative_links_in_the_docs_point_at_files_that_exist() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", prose):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_every_command_is_run_in_the_cli_page() -> None:
    from agent_datastore.cli import cli

    page = (ROOT / "docs" / "cli.md").read_text()
    # typed in the page's shell session, or run on its own (options may come first)
    run = set(re.findall(r"^agent-datastore> ([\w-]+)", page, re.MULTILINE))
    run |= set(
        re.findall(
            r"^\$ .*?agent-datastore (?:--?[\w-]+(?: '[^']*'| \S+)? )*([\w-]+)", page, re.MULTILINE
        )
    )
    assert set(cli.commands) - run == set()


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_to_sections_point_at_headings_that_exist() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    anchors = {}
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
        headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
        anchors[page.resolve()] = {_github_anchor(h) for h in headings}
    checked = 0
    for page in pages:
        prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
        for target, anchor in re.findall(r"\]\(([^)#:]*)#([^)]+)\)", prose):
            linked = (page.parent / target).resolve() if target else page.resolve()
            assert anchor in anchors[linked], f"{page.name} links to missing #{anchor}"
            checked += 1
    assert checked > 5
