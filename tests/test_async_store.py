"""The asynchronous store itself: opening, owning and closing its client, its index, and the
parts of the proxy that are not calls to the database. What its proxies do is checked by the
contract tests, which run against both twins (see ``tests/twins.py``)."""

from __future__ import annotations

import asyncio
from typing import Any

import mongomock_ng
import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import AutoReconnect

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


def test_each_store_refuses_the_other_drivers_collection() -> None:
    sync_client: MongoClient[dict[str, Any]] = MongoClient(connect=False)
    async_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient()
    with pytest.raises(TypeError, match="use AsyncDataStore"):
        DataStore(async_client.db.items)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="use DataStore"):
        AsyncDataStore(sync_client.db.items)
    sync_client.close()
    asyncio.run(async_client.close())


class FailingIndexes:
    """An async collection stand-in whose index listing (the first command of every attempt
    to ensure the indexes) fails, after letting other tasks run, and counts the attempts."""

    def __init__(self) -> None:
        self.attempts = 0

    def with_options(self, **_: Any) -> FailingIndexes:
        return self

    async def index_information(self) -> dict[str, Any]:
        self.attempts += 1
        await asyncio.sleep(0.01)
        raise AutoReconnect("connection closed")


def test_tasks_waiting_for_the_index_share_one_attempt_and_its_failure() -> None:
    collection = FailingIndexes()

    async def go() -> list[BaseException | None]:
        store = AsyncDataStore(collection)
        proxy = store.proxy("u", "a")
        return await asyncio.gather(
            *(proxy.get(f"k{i}") for i in range(10)), return_exceptions=True
        )

    results = asyncio.run(go())
    assert all(isinstance(result, DataStoreUnavailable) for result in results)
    assert collection.attempts == 1  # not one timeout after another

    async def again() -> None:
        store = AsyncDataStore(collection)
        with pytest.raises(DataStoreUnavailable):
            await store.proxy("u", "a").get("k")
        with pytest.raises(DataStoreUnavailable):
            await store.proxy("u", "a").get("k")  # the next call tries again

    asyncio.run(again())
    assert collection.attempts == 3


def test_iter_keys_goes_past_a_key_longer_than_any_the_store_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(agent_datastore._core, "KEY_PAGE_SIZE", 1)
    long_key = "a" * 1025  # written by hand: the store refuses keys over 1,024 bytes
    with agent_datastore.connect("mongomock://") as store:
        proxy = store.proxy("u", "a")
        proxy.set_many({"b": 1, "c": 2})
        now = store.now()
        store.collection.insert_one(
            {
                "userId": "u",
                "agentName": "a",
                "namespace": "default",
                "key": long_key,
                "value": 0,
                "metadata": {},
                "createdAt": now,
                "updatedAt": now,
            }
        )
        assert list(proxy.iter_keys()) == [long_key, "b", "c"]

        async def streamed() -> list[str]:
            twin = AsyncDataStore(store.collection)
            return [key async for key in twin.proxy("u", "a").iter_keys()]

        assert asyncio.run(streamed()) == [long_key, "b", "c"]
