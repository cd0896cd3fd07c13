"""What one tool answer may hold and carry: a get_many answer bounded in bytes with the rest
named as ``remaining``, short text forms, values too deep for MCP said so as a tool error,
integers as long as JSON parsers read, and whole-number floats for integer arguments."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from mcp import Client

import agent_datastore
from agent_datastore import AsyncDataStore, AsyncRemoteDataStoreProxy, issue_token
from agent_datastore.mcp import call_tool, item_uri
from agent_datastore.mcp._tools import MAX_ANSWER_BYTES, MAX_MCP_DEPTH, MAX_TEXT_COPY_BYTES

from .mcp_helpers import BACKENDS, run_with_client
from .service import SECRET, RemoteStore, ServiceThread

# a value of about a quarter of the answer budget: four or five fill an answer
QUARTER = "q" * (MAX_ANSWER_BYTES // 4 - 100)


def _nested(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def _answer_bytes(content: dict[str, Any]) -> int:
    return len(json.dumps(content, ensure_ascii=False).encode())


async def _read_all_by_remaining(read: Any, keys: list[str]) -> tuple[dict[str, Any], int]:
    """Everything ``keys`` hold, asked again for ``remaining`` until none is left; and how
    many calls it took. Each answer is checked against the budget."""
    found: dict[str, Any] = {}
    calls = 0
    pending = keys
    while pending:
        calls += 1
        content = await read(pending)
        assert content["items"] or content["missing"], "every answer makes progress"
        if len(content["items"]) > 1:
            assert _answer_bytes(content) <= MAX_ANSWER_BYTES
        assert not set(content["items"]) & set(found)
        found.update(content["items"])
        remaining = content.get("remaining", [])
        # in the order asked, none of them answered or missing
        assert remaining == [key for key in pending if key in remaining]
        assert not set(remaining) & (set(content["items"]) | set(content["missing"]))
        pending = remaining
    return found, calls


@pytest.mark.parametrize("backend", BACKENDS)
def test_get_many_answers_what_fits_and_names_the_rest(backend: str) -> None:
    async def scenario(client: Client, store: AsyncDataStore) -> None:
        proxy = store.proxy("user-1", "agent-a")
        values = {f"k{index}": f"{index}{QUARTER}" for index in range(10)}
        await proxy.set_many(values)
        keys = ["gone", *reversed(values)]  # not in key order: answers keep the order asked

        async def read(asked: list[str]) -> dict[str, Any]:
            result = await client.call_tool("get_many", {"keys": asked})
            assert not result.is_error, result.content
            assert result.structured_content is not None
            # the text form is a summary, not a second copy of the values
            assert result.content[0].type == "text"
            text = result.content[0].text
            assert len(text) < 200
            content = result.structured_content
            assert text.startswith(f"found {len(content['items'])} of {len(set(asked))} keys")
            if "remaining" in content:
                assert f"; {len(content['remaining'])} remaining" in text
            return content

        first = await read(keys)
        assert first["missing"] == ["gone"]
        assert 1 < len(first["items"]) < len(values)
        answered = first["items"]
        assert list(answered) == [key for key in keys if key in answered]
        assert first["remaining"] == [key for key in keys[1:] if key not in answered]
        found, calls = await _read_all_by_remaining(read, keys)
        assert found == values
        assert calls >= 3

    run_with_client(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_value_larger_than_the_budget_comes_alone_and_small_answers_stay_whole(
    backend: str,
) -> None:
    async def scenario(client: Client, store: AsyncDataStore) -> None:
        proxy = store.proxy("user-1", "agent-a")
        large = "L" * (MAX_ANSWER_BYTES + 1000)
        await proxy.set_many({"a": large, "b": 1, "c": {"n": 2**64}})
        first = await client.call_tool("get_many", {"keys": ["a", "b", "c"]})
        assert first.structured_content == {
            "items": {"a": large},
            "missing": [],
            "remaining": ["b", "c"],
        }
        second = await client.call_tool("get_many", {"keys": ["b", "c", "x"]})
        assert second.structured_content == {"items": {"b": 1, "c": {"n": 2**64}}, "missing": ["x"]}
        # small: the text repeats the values' JSON, for clients that show the model text only
        assert second.content[0].type == "text"
        summary, copy = second.content[0].text.split("\n")
        assert summary == "found 2 of 3 keys; 1 missing"
        assert json.loads(copy) == {"b": 1, "c": {"n": 2**64}}
        # get and get_item of the large value: the value whole, the text a line
        got = await client.call_tool("get", {"key": "a"})
        assert got.structured_content == {"key": "a", "found": True, "value": large}
        assert got.content[0].type == "text"
        assert (
            got.content[0].text
            == f"found 'a': {len(large) + 2:,} bytes of JSON, in the structured content"
        )
        item = await client.call_tool("get_item", {"key": "a"})
        assert item.structured_content is not None
        assert item.structured_content["item"]["value"] == large
        assert item.content[0].type == "text"
        assert len(item.content[0].text) < 200
        read = await client.read_resource(item_uri("default", "a"))
        assert json.loads(read.contents[0].text)["value"] == large  # type: ignore[union-attr]
        # a value just short of the text limit is still repeated
        near = "n" * (MAX_TEXT_COPY_BYTES - 10)
        await proxy.set("near", near)
        text = (await client.call_tool("get", {"key": "near"})).content[0]
        assert text.type == "text"
        assert json.loads(text.text) == near

    run_with_client(backend, scenario)


def test_through_a_store_service_get_many_pages_by_its_budget_and_batch(
    service: ServiceThread,
) -> None:
    # a service that answers at most 2 keys a request and 300 KiB an answer: the tool asks
    # once and passes on what the service did not answer as remaining
    backend = agent_datastore.connect("mongomock://")
    with RemoteStore(service, backend, max_batch=2, max_answer_bytes=300 * 1024) as remote:
        token = issue_token(SECRET, "user-1", "agent-a")

        async def main() -> None:
            async with AsyncRemoteDataStoreProxy(remote.url, token) as proxy:
                values = {"a": QUARTER, "b": QUARTER, "c": 3}
                await proxy.set_many(values)

                async def read(asked: list[str]) -> dict[str, Any]:
                    result = await call_tool(proxy, "get_many", {"keys": asked})
                    assert not result.is_error, result.content
                    assert result.structured_content is not None
                    return result.structured_content

                first = await read(["a", "b", "c", "gone"])
                assert first == {
                    "items": {"a": QUARTER},
                    "missing": [],
                    "remaining": ["b", "c", "gone"],
                }
                found, _ = await _read_all_by_remaining(read, ["a", "b", "c", "gone"])
                assert found == values

        asyncio.run(main())


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_value_too_deep_for_mcp_is_a_tool_error_not_a_protocol_failure(backend: str) -> None:
    async def scenario(client: Client, store: AsyncDataStore) -> None:
        proxy = store.proxy("user-1", "agent-a")
        # stored by other means: the store takes 400 levels
        await proxy.set("deep", _nested(300))
        await proxy.set("meta", 1, {"m": _nested(MAX_MCP_DEPTH + 1)})
        for name, arguments in [
            ("get", {"key": "deep"}),
            ("get_item", {"key": "deep"}),
            ("get_many", {"keys": ["deep"]}),
            ("get_item", {"key": "meta"}),
        ]:
            result = await client.call_tool(name, arguments)
            assert result.is_error, name
            assert result.structured_content is not None
            assert result.structured_content["error"] == "too_deep"
            message = result.structured_content["message"]
            assert f"deeper than the {MAX_MCP_DEPTH} levels" in message
            assert "over MCP" in message
        # the resource carries the item as text, which the SDK does not parse
        read = await client.read_resource(item_uri("default", "deep"))
        assert json.loads(read.contents[0].text)["value"] == _nested(300)  # type: ignore[union-attr]
        # through MCP, what could not be read back is not written
        too_deep = await client.call_tool("set", {"key": "k", "value": _nested(MAX_MCP_DEPTH + 1)})
        assert too_deep.is_error
        assert too_deep.structured_content is not None
        assert too_deep.structured_content["error"] == "invalid_argument"
        metadata = {"key": "k", "value": 1, "metadata": {"m": _nested(MAX_MCP_DEPTH + 1)}}
        assert (await client.call_tool("set", metadata)).is_error
        many = {"items": {"k": _nested(MAX_MCP_DEPTH + 1)}}
        assert (await client.call_tool("set_many", many)).is_error
        assert await proxy.get("k") is None
        # the deepest value that travels, as value and as metadata
        deepest = _nested(MAX_MCP_DEPTH)
        stored = await client.call_tool(
            "set", {"key": "k", "value": deepest, "metadata": {"m": deepest}}
        )
        assert not stored.is_error
        item = await client.call_tool("get_item", {"key": "k"})
        assert item.structured_content is not None
        assert item.structured_content["item"]["metadata"]["m"] == deepest

    run_with_client(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integers_up_to_4300_digits_and_a_refusal_in_the_callers_terms(backend: str) -> None:
    async def scenario(client: Client, store: AsyncDataStore) -> None:
        longest = -(10**4300 - 1)  # 4,300 nines
        assert not (await client.call_tool("set", {"key": "n", "value": longest})).is_error
        got = await client.call_tool("get", {"key": "n"})
        assert got.structured_content == {"key": "n", "found": True, "value": longest}
        refused = await client.call_tool("set", {"key": "n", "value": 10**4300})
        assert refused.structured_content == {
            "error": "invalid_argument",
            "message": "value for key 'n' is not storable JSON: an integer has more than "
            "4300 digits",
        }

    run_with_client(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_whole_number_floats_are_the_integers_they_stand_for(backend: str) -> None:
    async def scenario(client: Client, store: AsyncDataStore) -> None:
        async def ok(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
            result = await client.call_tool(name, arguments)
            assert not result.is_error, result.content
            assert result.structured_content is not None
            return result.structured_content

        await ok("set", {"key": "k", "value": 1, "if_version": 0.0})
        await ok("set", {"key": "k", "value": 2, "if_version": 1e0})
        conflict = await client.call_tool("set", {"key": "k", "value": 3, "if_version": 1.0})
        assert conflict.structured_content == {
            "error": "version_conflict",
            "message": "key 'k' is at version 2, not version 1",
        }
        assert await ok("increment", {"key": "c", "amount": 5.0}) == {"key": "c", "value": 5}
        assert (await ok("list_keys", {"limit": 1.0}))["keys"] == ["c"]
        assert await ok("delete", {"key": "k", "if_version": 2.0}) == {"key": "k", "deleted": True}
        # not whole, or not a number: the schema refuses, as documented
        for name, arguments in [
            ("increment", {"key": "c", "amount": 1.5}),
            ("increment", {"key": "c", "amount": True}),
            ("set", {"key": "k", "value": 1, "if_version": False}),
            ("list_keys", {"limit": 2.5}),
        ]:
            result = await client.call_tool(name, arguments)
            assert result.structured_content is not None
            assert result.structured_content["error"] == "invalid_argument", arguments
            assert "is not of type 'integer'" in result.structured_content["message"]

    run_with_client(backend, scenario)
