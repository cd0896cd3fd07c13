"""The console script on a real terminal (a pseudo-terminal): progress bars on stderr."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent_datastore import admin, connect


def _script() -> str:
    script = shutil.which("agent-datastore", path=str(Path(sys.executable).parent))
    assert script
    return script


@pytest.mark.skipif(not hasattr(pty, "openpty"), reason="needs a pseudo-terminal")
def test_import_shows_a_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    with connect("mongomock://") as store:
        store.proxy("u", "a").set_many({f"k{i}": i for i in range(50)})
        dump = tmp_path / "items.jsonl"
        dump.write_text("".join(json.dumps(record) + "\n" for record in admin.export_items(store)))

    leader, follower = pty.openpty()
    try:
        on_terminal = subprocess.run(
            [_script(), "--uri", "mongomock://", "import", str(dump)],
            stdout=subprocess.PIPE,
            stderr=follower,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
    assert on_terminal.returncode == 0
    assert b"import" in shown
    assert b"100%" in shown

    piped = subprocess.run(
        [_script(), "--uri", "mongomock://", "import", str(dump)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert piped.returncode == 0
    assert "100%" not in piped.stderr
    assert piped.stdout == "imported 50 items, rejected 0 lines\n"
