"""The MCP tools through the SDK's own client, connected in memory: each tool's happy path,
each documented error, the scope that no argument can change, and exact values."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from mcp import Client

import agent_datastore
from agent_datastore import AsyncDataStore
from agent_datastore.mcp import TOOLS, call_tool
from agent_datastore.mcp._server import UNAVAILABLE, error_of

from .mcp_helpers import BACKENDS, EXACT_VALUE, run_with_client

pytestmark = pytest.mark.parametrize("backend", BACKENDS)

TOOL_NAMES = [
    "get",
    "set",
    "delete",
    "list_keys",
    "list_namespaces",
    "get_many",
    "set_many",
    "increment",
    "get_item",
    "delete_many",
]


async def _ok(client: Client, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    # the short text form is there too, for clients that read only text
    assert result.content
    assert result.content[0].type == "text"
    assert result.content[0].text
    return result.structured_content


async def _refused(client: Client, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, arguments)
    assert result.is_error, result.structured_content
    error = result.structured_content
    assert error is not None
    assert result.content[0].type == "text"
    assert result.content[0].text == error["message"]
    return error


def test_the_tools_and_their_schemas(backend: str) -> None:
    async def scenario(client: Client, store: AsyncDataStore) -> None:
        listed = (await client.list_tools()).tools
        assert [tool.name for tool in listed] == TOOL_NAMES
        for tool in listed:
            schema = tool.input_schema
            assert schema["additionalProperties"] is False, tool.name
            assert schema["properties"]["namespace"]["default"] == "default"
            names = set(schema["properties"])
            assert not names & {"user", "user_id", "agent", "agent_name", "userId", "agentName"}
            assert "Errors" in (tool.description or ""), tool.name
            assert tool.annotations is not None
            assert tool.annotations.read_only_hint == (tool.name.startswith(("get", "list")))

    run_with_client(backend, scenario)


def test_every_tool_on_its_happy_path(backend: str) -> None:
    async def scenario(client: Client, store: AsyncDataStore) -> None:
        assert await _ok(client, "set", {"key": "a", "value": {"n": 1}}) == {
            "key": "a",
            "written": True,
        }
        assert await _ok(client, "get", {"key": "a"}) == {
            "key": "a",
            "found": True,
            "value": {"n": 1},
        }
        assert await _ok(client, "get", {"key": "nope"}) == {
            "key": "nope",
            "found": False,
            "value": None,
        }
        await _ok(
            client,
            "set",
            {"key": "b", "value": None, "metadata": {"by": "me"}, "ttl": 3600, "if_version": 0},
        )
        item = (await _ok(client, "get_item", {"key": "b"}))["item"]
        assert item["value"] is None
        assert item["metadata"] == {"by": "me"}
        assert item["version"] == 1
        assert item["expiresAt"] is not None
        await _ok(client, "set", {"key": "b", "value": 2, "if_version": 1})
        assert (await _ok(client, "get_item", {"key": "nope"}))["found"] is False
        assert await _ok(client, "increment", {"key": "c"}) == {"key": "c", "value": 1}
        assert await _ok(client, "increment", {"key": "c", "amount": -5, "ttl": 60}) == {
            "key": "c",
            "value": -4,
        }
        files = {"namespace": "files"}
        assert await _ok(client, "set_many", {**files, "items": {"x/1": 1, "x/2": 2, "y": 3}}) == {
            "written": 3
        }
        assert await _ok(client, "list_keys", {**files, "prefix": "x/"}) == {
            "keys": ["x/1", "x/2"],
            "next_start_after": None,
        }
        page = await _ok(client, "list_keys", {**files, "limit": 2})
        assert page == {"keys": ["x/1", "x/2"], "next_start_after": "x/2"}
        assert await _ok(client, "list_keys", {**files, "start_after": "x/2"}) == {
            "keys": ["y"],
            "next_start_after": None,
        }
        assert await _ok(client, "list_namespaces", {}) == {"namespaces": ["default", "files"]}
        assert await _ok(client, "get_many", {**files, "keys": ["y", "gone", "x/1"]}) == {
            "items": {"y": 3, "x/1": 1},
            "missing": ["gone"],
        }
        assert await _ok(client, "delete_many", {**files, "keys": ["y", "gone"]}) == {"deleted": 1}
        assert await _ok(client, "delete", {"key": "a"}) == {"key": "a", "deleted": True}
        assert await _ok(client, "delete", {"key": "a"}) == {"key": "a", "deleted": False}
        assert await _ok(client, "delete", {"key": "b", "if_version": 2}) == {
            "key": "b",
            "deleted": True,
        }
        # what the tools wrote is in the proxy's scope, as the proxy itself reads it
        proxy = store.proxy("user-1", "agent-a", "files")
        assert await proxy.list_keys() == ["x/1", "x/2"]

    run_with_client(backend, scenario)


def test_each_documented_error(backend: str) -> None:
    async def scenario(client: Client, store: AsyncDataStore) -> None:
        await _ok(client, "set", {"key": "k", "value": "text"})
        conflict = await _refused(client, "set", {"key": "k", "value": 1, "if_version": 7})
        assert conflict["error"] == "version_conflict"
        assert conflict["message"] == "key 'k' is at version 1, not version 7"
        deleting = await _refused(client, "delete", {"key": "k", "if_version": 0})
        assert deleting["error"] == "version_conflict"
        counter = await _refused(client, "increment", {"key": "k"})
        assert counter["error"] == "invalid_argument"
        assert "'k'" in counter["message"]
        # 1,024 characters, each 2 bytes in UTF-8: the schema counts characters, the proxy bytes
        too_long = await _refused(client, "get", {"key": "é" * 1024})
        assert too_long == {
            "error": "invalid_argument",
            "message": "key is 2048 bytes in UTF-8, over the limit of 1024",
        }
        # refused by the schema: the message says where
        empty = await _refused(client, "get", {"key": ""})
        assert empty["error"] == "invalid_argument"
        assert "at key" in empty["message"]
        missing = await _refused(client, "set", {"key": "k"})
        assert "'value' is a required property" in missing["message"]
        name = await _refused(client, "set", {"key": "k", "value": 1, "metadata": {"a.b": 1}})
        assert name["error"] == "invalid_argument"
        assert "metadata" in name["message"]
        # deeper than the store's 400 levels: the SDK's client cannot even serialize it (its
        # limit is lower, see docs/mcp.md), so the tool is called as the server calls it
        deep: Any = 0
        for _ in range(401):
            deep = [deep]
        nested = await call_tool(
            store.proxy("user-1", "agent-a"), "set", {"key": "k", "value": deep}
        )
        assert nested.is_error
        assert nested.structured_content is not None
        assert nested.structured_content["error"] == "invalid_argument"
        assert "400" in nested.structured_content["message"]
        amount = await _refused(client, "increment", {"key": "n", "amount": 2**63})
        assert amount["error"] == "invalid_argument"
        unknown = await _refused(client, "drop_database", {})
        assert unknown["error"] == "unknown_tool"
        # nothing of it was written
        assert await store.proxy("user-1", "agent-a").list_keys() == ["k"]
        assert await store.proxy("user-1", "agent-a").get("k") == "text"

    run_with_client(backend, scenario)


@pytest.mark.parametrize(
    "arguments",
    [
        {"key": "k", "value": 1, "user_id": "user-2"},
        {"key": "k", "value": 1, "agent_name": "agent-b"},
        {"key": "k", "value": 1, "userId": "user-2", "agentName": "agent-b"},
        {"key": "k", "value": 1, "scope": {"user": "user-2"}},
    ],
)
def test_no_argument_names_another_user_or_agent(backend: str, arguments: dict[str, Any]) -> None:
    async def scenario(client: Client, store: AsyncDataStore) -> None:
        error = await _refused(client, "set", arguments)
        assert error["error"] == "invalid_argument"
        assert "Additional properties are not allowed" in error["message"]
        for user, agent in [("user-1", "agent-a"), ("user-2", "agent-a"), ("user-1", "agent-b")]:
            assert await store.proxy(user, agent).list_keys() == []

    run_with_client(backend, scenario)


def test_another_users_items_are_out_of_reach(backend: str) -> None:
    async def scenario(client: Client, store: AsyncDataStore) -> None:
        await store.proxy("user-2", "agent-a").set("secret", 1)
        await store.proxy("user-1", "agent-b").set("secret", 2)
        assert (await _ok(client, "get", {"key": "secret"}))["found"] is False
        assert (await _ok(client, "list_keys", {}))["keys"] == []
        assert (await _ok(client, "list_namespaces", {}))["namespaces"] == []
        assert (await _ok(client, "delete_many", {"keys": ["secret"]}))["deleted"] == 0
        assert await store.proxy("user-2", "agent-a").get("secret") == 1

    run_with_client(backend, scenario)


def test_big_integers_and_dollar_and_dot_keys_round_trip_exactly(backend: str) -> None:
    async def scenario(client: Client, store: AsyncDataStore) -> None:
        key = "$weird.key/ü"
        await _ok(client, "set", {"key": key, "value": EXACT_VALUE, "metadata": {"n": 2**64}})
        assert (await _ok(client, "get", {"key": key}))["value"] == EXACT_VALUE
        item = (await _ok(client, "get_item", {"key": key}))["item"]
        assert item["value"] == EXACT_VALUE
        assert item["metadata"] == {"n": 2**64}
        await _ok(client, "set_many", {"items": {"a.b": 2**63, "$c": -(2**63) - 1}})
        assert (await _ok(client, "get_many", {"keys": ["a.b", "$c"]}))["items"] == {
            "a.b": 2**63,
            "$c": -(2**63) - 1,
        }
        stored = await store.proxy("user-1", "agent-a").get(key)
        assert stored == EXACT_VALUE
        assert json.dumps(stored) == json.dumps(EXACT_VALUE)  # the same types, not only equal

    run_with_client(backend, scenario)


def test_an_unavailable_store_is_said_so_without_its_address(backend: str) -> None:
    if backend != "embedded":
        pytest.skip("one unreachable server is enough")

    async def main() -> None:
        store = agent_datastore.connect_async(
            "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=100&connectTimeoutMS=100"
        )
        try:
            result = await call_tool(store.proxy("u", "a"), "get", {"key": "k"})
        finally:
            await store.aclose()
        assert result.is_error
        assert result.structured_content == {"error": "unavailable", "message": UNAVAILABLE}
        assert "127.0.0.1" not in str(result.model_dump())

    asyncio.run(main())


def test_errors_of_the_database_are_not_echoed(backend: str) -> None:
    if backend != "embedded":
        pytest.skip("no database involved")
    secret = "mongodb://admin:hunter2@db.internal:27017"
    assert error_of(agent_datastore.DataStoreError(f"refused ({secret})")) == (
        "refused",
        "the store refused the operation",
    )
    assert error_of(agent_datastore.DataStoreUnavailable(f"at {secret}")) == (
        "unavailable",
        UNAVAILABLE,
    )
    assert error_of(RuntimeError("a bug")) is None


def test_the_tools_are_the_ones_documented(backend: str) -> None:
    if backend != "embedded":
        pytest.skip("no store involved")
    assert [tool.name for tool in TOOLS] == TOOL_NAMES
