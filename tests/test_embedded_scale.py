"""The embedded store's figures have one source: ``scripts/embedded_scale.py``'s committed
result, from which the table in docs/api.md and in docs/performance.md is generated."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import agent_datastore

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "scripts" / "embedded_scale.py"
COMMITTED = ROOT / "benchmarks" / "results" / "embedded_scale.json"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("embedded_scale", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_exits_0() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "--out FILE" in result.stdout
    assert "--markdown" in result.stdout


def test_both_pages_show_the_table_generated_from_the_committed_result() -> None:
    script = _script()
    table = script.markdown_table(json.loads(COMMITTED.read_text()))
    assert "| 1,000 |" in table
    for page in (ROOT / "docs" / "api.md", ROOT / "docs" / "performance.md"):
        text = page.read_text()
        assert text.count(script.BEGIN_MARKER) == 1, page.name
        assert script.marked(text) == table, page.name


def test_the_committed_result_comes_from_the_documented_command() -> None:
    result = json.loads(COMMITTED.read_text())
    assert result["machine"]["command"] == "python scripts/embedded_scale.py"
    assert [row["items"] for row in result["rows"]] == _script().DEFAULT_SIZES


def test_a_run_writes_its_figures_with_the_machine_and_the_versions(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "5", "10", "--samples", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    written = json.loads(out.read_text())
    machine = written["machine"]
    assert machine["command"] == "python scripts/embedded_scale.py 5 10 --samples 1"
    assert machine["agent_datastore"] == agent_datastore.__version__
    assert {"date", "python", "pymongo", "mongomock_ng", "platform", "cpus"} <= set(machine)
    assert [row["items"] for row in written["rows"]] == [5, 10]
    markdown = subprocess.run(
        [sys.executable, str(SCRIPT), "--from", str(out), "--markdown"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert markdown.returncode == 0, markdown.stderr
    assert markdown.stdout == _script().markdown_table(written) + "\n"


def test_replacing_the_marked_table_keeps_the_rest_of_the_page() -> None:
    script = _script()
    page = f"before\n{script.BEGIN_MARKER}\nold\n{script.END_MARKER}\nafter\n"
    replaced = script.replace_marked(page, "| new |")
    assert replaced == f"before\n{script.BEGIN_MARKER}\n| new |\n{script.END_MARKER}\nafter\n"
    assert script.marked(replaced) == "| new |"


def test_updating_the_docs_needs_figures_that_are_kept() -> None:
    # a measurement saved nowhere would leave the docs without their source
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "10", "--update-docs"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--update-docs needs --from FILE or --out FILE" in result.stderr
