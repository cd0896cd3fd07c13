"""The ``agent-datastore`` console script and its ``demo`` command."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import agent_datastore
from agent_datastore import connect
from agent_datastore.cli import main
from agent_datastore.demo import (
    SAMPLE_REPOSITORY,
    index_repository,
    run_demo,
    search_repository,
    summarize,
)


def test_demo_runs_the_complete_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "files:acme/widgets       5 keys" in out
    assert "summary:acme/widgets     5 keys" in out
    assert "3 matches" in out
    assert "Cached in 'search-cache' under acme/widgets:config: 3 results." in out
    assert "not indexed. Run indexer first." in out
    assert "namespaces now: files:acme/widgets, search-cache, summary:acme/widgets" in out


def test_demo_agents_use_the_store_as_the_reference_describes() -> None:
    with connect("mongomock://") as store:
        data_store = store.proxy("u", "a")
        asyncio.run(index_repository(data_store, "r", SAMPLE_REPOSITORY))
        answer = asyncio.run(search_repository(data_store, {"repo": "r", "query": "widget"}, {}))
        assert [result["file"] for result in answer["results"]] == ["src/widgets.py"]
        assert answer["results"][0]["content_preview"] == SAMPLE_REPOSITORY["src/widgets.py"]
        assert data_store.list_namespaces() == ["files:r", "search-cache", "summary:r"]
        assert data_store.use_namespace("search-cache").get("r:widget")["count"] == 1


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 2
    assert "No such command 'no-such-command'" in capsys.readouterr().err


def test_installed_console_script_runs_the_demo() -> None:
    # the script pip installed beside this interpreter, whether or not its folder is on PATH
    script = shutil.which("agent-datastore", path=str(Path(sys.executable).parent))
    assert script, "the console script is not installed: pip install -e '.[test]'"
    result = subprocess.run([script, "demo"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "3 matches" in result.stdout
    help_result = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert help_result.returncode == 0
    for command in ("demo", "users", "stats", "export", "import", "doctor", "purge"):
        assert f"  {command} " in help_result.stdout


def test_installed_console_script_exits_3_quickly_when_the_server_is_away() -> None:
    import time

    from .helpers import closed_port

    script = shutil.which("agent-datastore", path=str(Path(sys.executable).parent))
    assert script
    uri = f"mongodb://127.0.0.1:{closed_port()}/?serverSelectionTimeoutMS=500"
    started = time.monotonic()
    result = subprocess.run([script, "--uri", uri, "users"], capture_output=True, text=True)
    assert time.monotonic() - started < 10
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.startswith("agent-datastore: database unavailable")
    assert result.stderr.count("\n") == 1  # one line, no traceback


def test_python_dash_m_reports_the_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent_datastore", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout == f"agent-datastore {agent_datastore.__version__}\n"


def test_embedded_scale_script_runs() -> None:
    script = Path(__file__).parent.parent / "scripts" / "embedded_scale.py"
    result = subprocess.run(
        [sys.executable, str(script), "10", "--samples", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["rows"]
    assert row["items"] == 10
    assert row["get_ms"] > 0
    assert row["set_ms"] > 0
    assert row["set_many_100_ms"] > 0


def test_installed_console_script_exports_then_imports_thousands_of_items(
    tmp_path: Path,
) -> None:
    """Two processes of the script, one exporting from a server and one importing into
    another, through a file: the second server ends up holding exactly the same items."""
    from datetime import datetime, timedelta, timezone

    import bson

    from agent_datastore import _codec

    from .standin import StandInServer

    script = shutil.which("agent-datastore", path=str(Path(sys.executable).parent))
    assert script
    source, target = StandInServer(), StandInServer()
    try:
        start = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
        values: list[object] = [{"n": 1}, [1.5, None], "é\x00", {"a.b": 2**70}, True, {"$x": {}}]
        for i in range(3000):
            document = {
                "userId": f"user-{i % 7}",
                "agentName": f"agent-{i % 3}",
                "namespace": f"ns:{i % 5}",
                "key": f"key-{i:05d}",
                "value": _codec.encode(values[i % len(values)], 2)[0],
                "metadata": {"batch": i // 100, "odd$": _codec.encode({"$": i}, 3)[0]},
                "createdAt": start + timedelta(seconds=i),
                "updatedAt": start + timedelta(seconds=i, milliseconds=1),
                "version": 1 + i % 4,
            }
            if i % 10 == 0:
                document["expiresAt"] = start + timedelta(days=400, seconds=i)
            source.put(document)
        dump = tmp_path / "items.jsonl"
        exported = subprocess.run(
            [script, "--uri", source.uri, "export", "-o", str(dump)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert exported.returncode == 0, exported.stderr
        assert exported.stdout == f"exported 3000 items to {dump}\n"
        assert len(dump.read_text().splitlines()) == 3000

        imported = subprocess.run(
            [script, "--uri", target.uri, "import", str(dump)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert imported.returncode == 0, imported.stderr
        assert imported.stdout == "imported 3000 items, rejected 0 lines\n"
        assert source.unexpected == target.unexpected == []

        def as_stored(items: dict[tuple[str, ...], dict[str, object]]) -> dict[object, object]:
            return {scope: bson.decode(bson.encode(doc)) for scope, doc in items.items()}

        assert as_stored(target.items) == as_stored(source.items)
    finally:
        source.stop()
        target.stop()


def test_nightly_export_script_writes_a_dated_archive_and_keeps_the_newest(
    tmp_path: Path,
) -> None:
    tmp_path = tmp_path / "backups with spaces"
    tmp_path.mkdir()
    import gzip
    import os
    from datetime import datetime

    from .standin import StandInServer

    script = Path(__file__).parent.parent / "scripts" / "nightly_export.sh"
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    environment.pop("AGENT_DATASTORE_URI", None)
    refused = subprocess.run(
        ["bash", str(script), str(tmp_path)], capture_output=True, text=True, env=environment
    )
    assert refused.returncode == 2
    assert "set AGENT_DATASTORE_URI" in refused.stderr

    for old in ("2020-01-01", "2020-01-02", "2020-01-03"):
        (tmp_path / f"agent-datastore-{old}.jsonl.gz").write_bytes(gzip.compress(b""))
    server = StandInServer()
    try:
        for i in range(20):
            server.put(
                {
                    "userId": "u",
                    "agentName": "a",
                    "namespace": "default",
                    "key": f"k{i}",
                    "value": i,
                    "metadata": {},
                    "createdAt": datetime(2026, 1, 1),
                    "updatedAt": datetime(2026, 1, 1),
                }
            )
        environment["AGENT_DATASTORE_URI"] = server.uri
        result = subprocess.run(
            ["bash", str(script), str(tmp_path), "2"],
            capture_output=True,
            text=True,
            env=environment,
            timeout=120,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    archives = sorted(p.name for p in tmp_path.glob("agent-datastore-*.jsonl.gz"))
    assert len(archives) == 2
    assert archives[0] == "agent-datastore-2020-01-03.jsonl.gz"
    newest = tmp_path / archives[1]
    assert result.stdout == f"exported 20 items to {newest}\n"
    assert len(gzip.decompress(newest.read_bytes()).splitlines()) == 20


def test_the_demo_counts_in_the_right_number() -> None:
    one_line = asyncio.run(summarize("notes.md", "config"))
    assert one_line == "markdown file, 1 line, mentions config"
    printed: list[str] = []
    run_demo(echo=printed.append)
    assert "removed 1 key;" in printed[-1]
    assert not [line for line in printed if "(s)" in line or re.search(r"\b1 \w+s\b", line)]
