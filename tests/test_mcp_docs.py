"""docs/mcp.md's tools reference is the one the tools' schemas give."""

from __future__ import annotations

from pathlib import Path

from agent_datastore.mcp import TOOLS
from agent_datastore.mcp._reference import reference, rewritten

PAGE = Path(__file__).parent.parent / "docs" / "mcp.md"


def test_the_tools_reference_in_the_docs_is_generated_from_the_schemas() -> None:
    page = PAGE.read_text(encoding="utf-8")
    assert rewritten(page) == page, (
        "docs/mcp.md's tools reference is stale: run "
        "python -m agent_datastore.mcp._reference docs/mcp.md"
    )
    section = reference()
    for tool in TOOLS:
        assert f"### `{tool.name}`" in section
        for argument in tool.input_schema["properties"]:
            assert f"| `{argument}` |" in section
