"""The asynchronous store itself: opening, owning and closing its client, its index, and the
parts of the proxy that are not calls to the database. What its proxies do is checked by the
contract tests, which run against both twins (see ``tests/twins.py``)."""

from __future__ import annotations

import asyncio
from typing import Any

import mongomock_ng
import pytest
from pymongo import AsyncMongoClient

import agent_datastore
from agent_datastore import (
    AgentDataStoreProxy,
    AsyncAgentDataStoreProxy,
    AsyncDataStore,
    DataStore,
    DataStoreUnavailable,
)

from .helpers import closed_port


def test_connect_async_never_waits_and_opens_the_async_client() -> None:
    store = agent_datastore.connect_async(f"mongodb://127.0.0.1:{closed_port()}/tenant")
    assert isinstance(store, AsyncDataStore)
    assert isinstance(store._owned_client, AsyncMongoClient)
    assert store.collection.full_name == "tenant.items"
    asyncio.run(store.aclose())


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"uri": "redis://x"}, ValueError),
        ({"uri": "mongodb://host:notaport/"}, ValueError),
        ({"uri": 5}, TypeError),
        ({"uri": "mongomock://", "max_value_bytes": 0}, ValueError),
        ({"uri": "mongomock://", "clock": "now"}, TypeError),
        ({"uri": "mongomock://", "collection": "$bad"}, ValueError),
        ({"uri": "mongodb://127.0.0.1:1/", "collection": "$bad"}, ValueError),
    ],
)
def test_connect_async_refuses_what_connect_refuses(
    arguments: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        agent_datastore.connect(**arguments)
    with pytest.raises(error):
        agent_datastore.connect_async(**arguments)


def test_a_closed_async_store_is_unavailable_and_closing_is_idempotent() -> None:
    async def go() -> None:
        store = agent_datastore.connect_async("mongomock://")
        proxy = store.proxy("u", "a")
        await proxy.set("k", 1)
        await store.aclose()
        await store.aclose()
        with pytest.raises(DataStoreUnavailable, match="closed"):
            await proxy.get("k")
        assert "closed" in repr(store)

    asyncio.run(go())


def test_an_async_store_over_a_callers_collection_leaves_its_client_open() -> None:
    client = mongomock_ng.MongoClient()

    async def go() -> None:
        async with AsyncDataStore(client.platform.agent_items) as store:
            await store.proxy("u", "a").set("k", 1)

    asyncio.run(go())
    assert client.platform.agent_items.count_documents({"key": "k"}) == 1


def test_the_async_store_ensures_both_indexes_once() -> None:
    async def go() -> dict[str, Any]:
        async with agent_datastore.connect_async("mongomock://") as store:
            proxy = store.proxy("u", "a")
            await asyncio.gather(*(proxy.set(f"k{i}", i) for i in range(10)))
            return dict(store.collection.index_information())

    indexes = asyncio.run(go())
    assert indexes["userId_1_agentName_1_namespace_1_key_1"]["unique"] is True
    assert indexes["expiresAt_1"]["expireAfterSeconds"] == 0


def test_each_proxy_class_takes_only_its_own_store() -> None:
    with agent_datastore.connect("mongomock://") as sync_store:
        twin = agent_datastore.connect_async("mongomock://")
        with pytest.raises(TypeError, match="AsyncDataStore"):
            AsyncAgentDataStoreProxy(sync_store, "u", "a")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="DataStore"):
            AgentDataStoreProxy(twin, "u", "a")  # type: ignore[arg-type]
        assert isinstance(twin.proxy("u", "a").use_namespace("n"), AsyncAgentDataStoreProxy)
        asyncio.run(twin.aclose())
        assert isinstance(sync_store, DataStore)


def test_bad_input_raises_when_awaited_and_sends_nothing() -> None:
    async def go() -> None:
        async with agent_datastore.connect_async("mongomock://") as store:
            proxy = store.proxy("u", "a")
            with pytest.raises(TypeError, match="key must be a str"):
                await proxy.get({"$ne": None})  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="prefix"):
                proxy.iter_keys(prefix=5)  # type: ignore[arg-type]
            assert list(store.collection.find({})) == []

    asyncio.run(go())
