"""The version is written once, in ``agent_datastore.__version__``, and is the newest release
of CHANGELOG.md, whose headings keep the Keep a Changelog form."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from click.testing import CliRunner

import agent_datastore
from agent_datastore.cli import cli

ROOT = Path(__file__).parent.parent
CHANGELOG = (ROOT / "CHANGELOG.md").read_text()
RELEASE = re.compile(r"## \[(?P<version>\d+\.\d+\.\d+)\] - (?P<date>\d{4}-\d{2}-\d{2})")
SECTIONS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def _releases() -> list[tuple[tuple[int, ...], date]]:
    releases = []
    for heading in re.findall(r"^## .*$", CHANGELOG, flags=re.MULTILINE):
        if heading == "## [Unreleased]":
            continue
        match = RELEASE.fullmatch(heading)
        assert match, f"not a release heading: {heading!r}"
        version = tuple(int(part) for part in match["version"].split("."))
        releases.append((version, date.fromisoformat(match["date"])))
    return releases


def test_the_version_is_the_newest_release_of_the_changelog() -> None:
    newest = ".".join(map(str, _releases()[0][0]))
    assert agent_datastore.__version__ == newest


def test_the_command_prints_that_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"agent-datastore {agent_datastore.__version__}\n"


def test_the_changelog_headings_keep_the_form() -> None:
    releases = _releases()
    assert len(releases) >= 2
    versions = [version for version, _ in releases]
    assert versions == sorted(versions, reverse=True)
    assert len(set(versions)) == len(versions)
    dates = [released for _, released in releases]
    assert dates == sorted(dates, reverse=True)
    for heading in re.findall(r"^### (.*)$", CHANGELOG, flags=re.MULTILINE):
        assert heading in SECTIONS, heading
    # every release says something
    for block in re.split(r"^## ", CHANGELOG, flags=re.MULTILINE)[1:]:
        assert "\n### " in block, block.splitlines()[0]
        assert "\n- " in block, block.splitlines()[0]


def test_the_package_metadata_reads_the_version_from_the_package() -> None:
    # read as text: tomllib is not in Python 3.10, which the package supports
    project = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]$', project, flags=re.MULTILINE)
    assert not re.search(r"^version =", project, flags=re.MULTILINE)
    hatch = project.split("[tool.hatch.version]\n", 1)[1].split("\n[", 1)[0]
    assert hatch.strip() == 'path = "agent_datastore/__init__.py"'
    package = (ROOT / "agent_datastore" / "__init__.py").read_text()
    assert f'__version__ = "{agent_datastore.__version__}"' in package
