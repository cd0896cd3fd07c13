"""The asynchronous twin over the wire: the same commands as the synchronous proxy, through
pymongo's real ``AsyncMongoClient`` to the wire-protocol test server, and an event loop that
keeps running while the store waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from bson.int64 import Int64

import agent_datastore
from agent_datastore import (
    AgentDataStoreProxy,
    AsyncAgentDataStoreProxy,
    DataStoreUnavailable,
    VersionConflict,
)

from .helpers import closed_port
from .test_wire_commands import ITEM, SCOPE, without_expiry
from .wire import Fault, WireServer, start_wire_server


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServer]:
    yield from start_wire_server()


def run_on_both(
    wire: WireServer,
    sync_call: Callable[[AgentDataStoreProxy], Any],
    async_call: Callable[[AsyncAgentDataStoreProxy], Awaitable[Any]],
    replies: Callable[[], None] = lambda: None,
) -> tuple[tuple[Any, list[dict[str, Any]]], tuple[Any, list[dict[str, Any]]]]:
    """The result and the commands of one call through each twin, the index creation left
    out; ``replies`` sets up the server's answers before each."""
    with wire.connect() as store:
        store.ensure_indexes()
        wire.take()
        replies()
        sync_result = sync_call(store.proxy("user-1", "agent-a", "ns"))
        sync_commands = wire.take()

    async def go() -> Any:
        async with agent_datastore.connect_async(wire.uri, serverSelectionTimeoutMS=10_000) as twin:
            await twin.ensure_indexes()
            wire.take()
            replies()
            return await async_call(twin.proxy("user-1", "agent-a", "ns"))

    async_result = asyncio.run(go())
    return (sync_result, sync_commands), (async_result, wire.take())


def same_commands(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> None:
    """Equal but for what differs between any two calls: sessions, transaction numbers,
    the moment that decides expiry, and the timestamps written."""

    def normalised(command: Any) -> Any:
        if isinstance(command, dict):
            return {
                k: normalised(v)
                for k, v in command.items()
                if k not in ("lsid", "txnNumber", "$clusterTime", "$db")
            }
        if isinstance(command, list):
            return [normalised(v) for v in command]
        if hasattr(command, "isoformat"):
            return "<date>"
        return command

    assert [normalised(c) for c in first] == [normalised(c) for c in second]


def test_get_sends_the_same_find(wire: WireServer) -> None:
    answer = [{"value": {"n": Int64(2**40)}}]
    (sync_value, sync_commands), (async_value, async_commands) = run_on_both(
        wire,
        lambda p: p.get("k"),
        lambda p: p.get("k"),
        lambda: wire.find_batches.append(list(answer)),
    )
    assert sync_value == async_value == {"n": 2**40}
    (command,) = async_commands
    assert without_expiry(command["filter"]) == dict(ITEM)
    same_commands(sync_commands, async_commands)


def test_set_sends_the_same_upsert_pipeline(wire: WireServer) -> None:
    (_, sync_commands), (result, async_commands) = run_on_both(
        wire,
        lambda p: p.set("k", {"a.b": [1, 2**70]}, metadata={"m": "$x"}, ttl=30),
        lambda p: p.set("k", {"a.b": [1, 2**70]}, metadata={"m": "$x"}, ttl=30),
    )
    assert result is None
    (command,) = async_commands
    assert command["updates"][0]["q"] == dict(ITEM)
    assert command["updates"][0]["upsert"] is True
    same_commands(sync_commands, async_commands)


def test_set_many_sends_the_same_single_bulk_write(wire: WireServer) -> None:
    items = {f"key-{i:03d}": i for i in range(200)}
    (sync_count, sync_commands), (async_count, async_commands) = run_on_both(
        wire,
        lambda p: p.set_many(items, metadata={"batch": 1}),
        lambda p: p.set_many(items, metadata={"batch": 1}),
    )
    assert sync_count == async_count == 200
    (command,) = async_commands
    assert command["ordered"] is False
    assert len(command["updates"]) == 200
    same_commands(sync_commands, async_commands)


def test_delete_many_sends_the_same_single_delete(wire: WireServer) -> None:
    def replies() -> None:
        wire.deleted = 2

    try:
        (sync_count, sync_commands), (async_count, async_commands) = run_on_both(
            wire,
            lambda p: p.delete_many(["b", "a", "zz", "b"]),
            lambda p: p.delete_many(["b", "a", "zz", "b"]),
            replies,
        )
    finally:
        wire.deleted = 0
    assert sync_count == async_count == 2
    (command,) = async_commands
    (statement,) = command["deletes"]
    assert without_expiry(statement["q"]) == dict([*SCOPE, ("key", {"$in": ["b", "a", "zz"]})])
    same_commands(sync_commands, async_commands)


def test_list_keys_sends_the_same_page_query(wire: WireServer) -> None:
    answer = [{"key": "a:1"}, {"key": "a:2"}]
    (sync_keys, sync_commands), (async_keys, async_commands) = run_on_both(
        wire,
        lambda p: p.list_keys(prefix="a:", limit=2, start_after="a:0"),
        lambda p: p.list_keys(prefix="a:", limit=2, start_after="a:0"),
        lambda: wire.find_batches.append(list(answer)),
    )
    assert sync_keys == async_keys == ["a:1", "a:2"]
    (command,) = async_commands
    assert without_expiry(command["filter"]) == dict(
        [*SCOPE, ("key", {"$regex": "^a:", "$gt": "a:0"})]
    )
    same_commands(sync_commands, async_commands)


def test_iter_keys_and_compare_and_set_behave_the_same(wire: WireServer) -> None:
    async def twin_calls(p: AsyncAgentDataStoreProxy) -> Any:
        keys = [key async for key in p.iter_keys()]
        try:
            await p.set("k", 1, if_version=2)
        except VersionConflict as conflict:
            return keys, conflict.current_version
        return keys, None

    def sync_calls(p: AgentDataStoreProxy) -> Any:
        keys = list(p.iter_keys())
        try:
            p.set("k", 1, if_version=2)
        except VersionConflict as conflict:
            return keys, conflict.current_version
        return keys, None

    def replies() -> None:
        wire.find_batches.append([{"key": "a"}, {"key": "b"}])
        wire.found_and_modified.append({"version": 5, "createdAt": datetime(2026, 1, 1)})

    (sync_result, sync_commands), (async_result, async_commands) = run_on_both(
        wire, sync_calls, twin_calls, replies
    )
    assert sync_result == async_result == (["a", "b"], 5)
    assert [next(iter(c)) for c in async_commands] == ["find", "findAndModify"]
    same_commands(sync_commands, async_commands)


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.get("k"),
        lambda p: p.set("k", 1),
        lambda p: p.set_many({"a": 1}),
        lambda p: p.list_keys(),
        lambda p: p.increment("k"),
        lambda p: p.delete("k"),
    ],
    ids=["get", "set", "set_many", "list_keys", "increment", "delete"],
)
def test_an_unreachable_server_raises_unavailable_within_the_timeout(
    call: Callable[[AsyncAgentDataStoreProxy], Awaitable[Any]],
) -> None:
    uri = f"mongodb://127.0.0.1:{closed_port()}/?serverSelectionTimeoutMS=300"

    async def go() -> tuple[DataStoreUnavailable, float]:
        async with agent_datastore.connect_async(uri) as store:
            started = time.monotonic()
            with pytest.raises(DataStoreUnavailable) as caught:
                await call(store.proxy("u", "a"))
            return caught.value, time.monotonic() - started

    error, elapsed = asyncio.run(go())  # the socket pymongo may leave: see tests/conftest.py
    assert error.status_code == 503
    assert "database unavailable" in error.detail
    assert elapsed < 0.3 + 3  # the configured timeout, far from pymongo's default 30 s


def test_a_lost_connection_is_retried_by_the_async_client_too(wire: WireServer) -> None:
    async def go() -> Any:
        async with agent_datastore.connect_async(wire.uri, serverSelectionTimeoutMS=10_000) as s:
            await s.ensure_indexes()
            wire.take()
            wire.fail_next("update", Fault("hangup"))
            await s.proxy("u", "a").set("k", 1)

    asyncio.run(go())
    first, second = wire.take()
    assert (first["lsid"], first["txnNumber"]) == (second["lsid"], second["txnNumber"])


def test_many_agent_tasks_make_progress_while_the_store_is_slow(wire: WireServer) -> None:
    """Twenty tasks call the store while the server holds every answer back. Each call can
    only reach the server if the ones before it gave the event loop back; a heartbeat task
    keeps beating meanwhile. Then the server answers, and every task finishes."""
    tasks = 20
    wire.fail_next("find", *[Fault("hold")] * tasks)

    async def go() -> tuple[list[Any], int, int]:
        beats = 0
        stop = asyncio.Event()

        async def heartbeat() -> None:
            nonlocal beats
            while not stop.is_set():
                beats += 1
                await asyncio.sleep(0.001)

        async with agent_datastore.connect_async(wire.uri, serverSelectionTimeoutMS=10_000) as s:
            await s.ensure_indexes()
            wire.take()
            beating = asyncio.create_task(heartbeat())
            proxies = [s.proxy(f"user-{i}", "agent") for i in range(tasks)]
            calls = [asyncio.create_task(p.get("k", default=i)) for i, p in enumerate(proxies)]
            deadline = asyncio.get_running_loop().time() + 30  # a guard, not a measurement
            while wire.held() < tasks and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            held_at_once, beats_while_held = wire.held(), beats
            wire.release_held()
            results = await asyncio.gather(*calls)
            stop.set()
            await beating
        return results, held_at_once, beats_while_held

    results, held_at_once, beats_while_held = asyncio.run(go())
    assert held_at_once == tasks  # every task's command was out at the same time
    assert beats_while_held > 0
    assert results == list(range(tasks))  # nothing stored: each got its own default
    wire.take()
