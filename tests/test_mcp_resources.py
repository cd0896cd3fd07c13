"""The MCP resources through the SDK's client in memory: a listing per namespace and an item
per key, read-only, with namespaces and keys of any spelling percent-encoded exactly."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.shared.exceptions import MCPError

from agent_datastore import AsyncDataStore
from agent_datastore.mcp import ITEM_TEMPLATE, LISTING_TEMPLATE, item_uri, listing_uri
from agent_datastore.mcp._resources import _ITEM, _decoded

from .mcp_helpers import BACKENDS, EXACT_VALUE, run_with_client

# '/', '%', '$', '.', '?', '#', spaces, an encoded-looking text, and beyond the BMP
AWKWARD = ["a/b", "100%", "%2F", "$x.y", "?q=1#f", " sp ace ", "ключ", "\U0001f600/\u2028", "."]


def _json(result: object) -> object:
    contents = result.contents  # type: ignore[attr-defined]
    assert len(contents) == 1
    assert contents[0].mime_type == "application/json"
    return json.loads(contents[0].text)


@pytest.mark.parametrize("backend", BACKENDS)
def test_listings_and_items_with_awkward_names_round_trip(backend: str) -> None:
    async def scenario(client: Client, store: AsyncDataStore) -> None:
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == [LISTING_TEMPLATE, ITEM_TEMPLATE]
        proxy = store.proxy("user-1", "agent-a")
        for name in AWKWARD:
            await proxy.use_namespace(name).set(name, {"name": name, "n": 2**64})
        await proxy.set("big", EXACT_VALUE)
        listed = (await client.list_resources()).resources
        assert sorted(r.uri for r in listed) == sorted(map(listing_uri, [*AWKWARD, "default"]))
        for name in AWKWARD:
            listing = _json(await client.read_resource(listing_uri(name)))
            assert listing == {"namespace": name, "keys": [name], "more": False}
            item = _json(await client.read_resource(item_uri(name, name)))
            assert isinstance(item, dict)
            assert item["key"] == name
            assert item["value"] == {"name": name, "n": 2**64}
            assert item["version"] == 1
        big = _json(await client.read_resource(item_uri("default", "big")))
        assert isinstance(big, dict)
        assert big["value"] == EXACT_VALUE

    run_with_client(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_resources_missing_items_and_bad_encodings_are_errors(backend: str) -> None:
    async def scenario(client: Client, store: AsyncDataStore) -> None:
        await store.proxy("user-2", "agent-a").set("theirs", 1)
        for uri in [
            item_uri("default", "theirs"),  # another user's: not there for this one
            "datastore://namespaces/default/items/a/b",  # an unencoded '/'
            "datastore://namespaces/default/items/%FF",  # not UTF-8
            "datastore://namespaces//keys",
            "file:///etc/passwd",
        ]:
            with pytest.raises(MCPError) as refused:
                await client.read_resource(uri)
            assert refused.value.code == -32602, uri
        with pytest.raises(MCPError, match="bytes in UTF-8"):
            await client.read_resource(item_uri("default", "é" * 1024))

    run_with_client(backend, scenario)


@settings(max_examples=50)
@given(namespace=st.text(min_size=1, max_size=20), key=st.text(min_size=1, max_size=40))
def test_an_item_uri_decodes_to_its_namespace_and_key(namespace: str, key: str) -> None:
    # (hypothesis's text has no lone surrogates, which have no UTF-8 and so no URI)
    match = _ITEM.fullmatch(item_uri(namespace, key))
    assert match is not None
    assert (_decoded(match[1]), _decoded(match[2])) == (namespace, key)
