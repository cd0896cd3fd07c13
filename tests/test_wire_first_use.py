"""First use through the wire: what a store sends before its first call (a ``listIndexes``,
and a bounded ``createIndexes`` only for what is missing), how a build cut off at its bound
lets calls go on, and the edges around it: indexes that look like the store's but do not
serve, and unacknowledged writes."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pymongo
import pytest
from click.testing import CliRunner
from pymongo import WriteConcern

import agent_datastore
from agent_datastore import AsyncDataStore, DataStore, DataStoreUnavailable, _core, _store
from agent_datastore._core import (
    ENSURE_INDEXES_TIMEOUT,
    FIRST_USE_INDEX_BUILD_MS,
    INDEX_NAME,
    TTL_INDEX_NAME,
)
from agent_datastore.cli import cli

from .helpers import closed_port
from .test_wire_commands import INDEX, TTL_INDEX
from .wire import Fault, WireServer, start_wire_server

ID_INDEX = {"v": 2, "key": {"_id": 1}, "name": "_id_"}
# the store's two indexes as an operator might have made them: other names, 1.0 for 1
OPERATORS_INDEXES = [
    ID_INDEX,
    {
        "v": 2,
        "key": {"userId": 1, "agentName": 1, "namespace": 1, "key": 1.0},
        "name": "items_by_key",
        "unique": True,
        "collation": {"locale": "simple"},
    },
    {"v": 2, "key": {"expiresAt": 1}, "name": "ttl", "expireAfterSeconds": 0},
]
MAX_TIME_EXPIRED = Fault("error", 50, "operation exceeded time limit")


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServer]:
    yield from start_wire_server()


@pytest.fixture(autouse=True)
def clean(wire: WireServer) -> Iterator[None]:
    yield
    wire.faults.clear()
    wire.indexes = []
    wire.release_held()
    wire.take()


def names(commands: list[dict[str, Any]]) -> list[str]:
    return [next(iter(command)) for command in commands]


def first_calls_sync(wire: WireServer, calls: int = 2) -> list[dict[str, Any]]:
    with wire.connect() as store:
        proxy = store.proxy("u", "a")
        for _ in range(calls):
            assert proxy.get("k", "absent") == "absent"
    return wire.take()


def first_calls_async(wire: WireServer, calls: int = 2) -> list[dict[str, Any]]:
    async def go() -> None:
        async with agent_datastore.connect_async(wire.uri, serverSelectionTimeoutMS=10_000) as s:
            proxy = s.proxy("u", "a")
            for _ in range(calls):
                assert await proxy.get("k", "absent") == "absent"

    asyncio.run(go())
    return wire.take()


TWINS = pytest.mark.parametrize("first_calls", [first_calls_sync, first_calls_async])


# ------------------------------------------------------------------------------- first use


@TWINS
def test_indexes_already_there_cost_one_listing_and_nothing_more(
    wire: WireServer, first_calls: Any
) -> None:
    wire.indexes = OPERATORS_INDEXES
    assert names(first_calls(wire)) == ["listIndexes", "find", "find"]


@TWINS
def test_missing_indexes_are_created_in_one_bounded_command(
    wire: WireServer, first_calls: Any
) -> None:
    commands = first_calls(wire)
    assert names(commands) == ["listIndexes", "createIndexes", "find", "find"]
    creation = commands[1]
    assert [dict(index) for index in creation["indexes"]] == [INDEX, TTL_INDEX]
    assert creation["maxTimeMS"] == FIRST_USE_INDEX_BUILD_MS


@TWINS
def test_only_the_missing_index_is_created(wire: WireServer, first_calls: Any) -> None:
    wire.indexes = [ID_INDEX, {**INDEX, "v": 2}]
    commands = first_calls(wire)
    assert names(commands) == ["listIndexes", "createIndexes", "find", "find"]
    assert [dict(index) for index in commands[1]["indexes"]] == [TTL_INDEX]


@TWINS
@pytest.mark.parametrize(
    "cut_off",
    [MAX_TIME_EXPIRED, Fault("error", 276, "index build already in progress")],
    ids=["MaxTimeMSExpired", "IndexBuildAlreadyInProgress"],
)
def test_a_build_cut_off_at_its_bound_lets_the_calls_go_on(
    wire: WireServer, first_calls: Any, cut_off: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    wire.fail_next("createIndexes", cut_off)
    # the calls succeed, and no call sends an index command again within the retry interval
    with caplog.at_level(logging.WARNING, logger="agent_datastore"):
        assert names(first_calls(wire, calls=3)) == [
            "listIndexes",
            "createIndexes",
            "find",
            "find",
            "find",
        ]
    # once, for the operator: the calls now run without the indexes
    warnings = [r.getMessage() for r in caplog.records if r.name == "agent_datastore"]
    assert len(warnings) == 1
    assert "ensure-indexes" in warnings[0]
    assert "without them" in warnings[0]


@TWINS
def test_after_the_retry_interval_the_store_tries_again(
    wire: WireServer, first_calls: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_core, "INDEX_RETRY_INTERVAL", 0.0)
    wire.fail_next("createIndexes", MAX_TIME_EXPIRED)
    commands = first_calls(wire, calls=3)
    # cut off, then the next call tries again and the build succeeds: no more index commands
    assert names(commands) == [
        "listIndexes",
        "createIndexes",
        "find",
        "listIndexes",
        "createIndexes",
        "find",
        "find",
    ]
    assert commands[4]["maxTimeMS"] == FIRST_USE_INDEX_BUILD_MS


def test_calls_do_not_wait_for_a_retry_under_way(
    wire: WireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one call tries the build again (held by the server), another call on another
    thread is answered."""
    monkeypatch.setattr(_core, "INDEX_RETRY_INTERVAL", 0.0)
    wire.fail_next("createIndexes", MAX_TIME_EXPIRED, Fault("hold"))
    with wire.connect() as store:
        proxy = store.proxy("u", "a")
        proxy.get("k")  # the first build, cut off
        retrying = threading.Thread(target=proxy.get, args=("k",))
        retrying.start()
        for _ in range(3000):  # a guard, not a measurement
            if wire.held():
                break
            threading.Event().wait(0.01)
        assert wire.held() == 1
        assert proxy.get("other", "absent") == "absent"  # not held up by the retry
        wire.release_held()
        retrying.join(timeout=30)
    assert names(wire.take()) == [
        "listIndexes",
        "createIndexes",
        "find",
        "listIndexes",
        "createIndexes",
        "find",  # the other call, while the retry's build was held
        "find",  # the retrying call, after it
    ]


def test_async_calls_do_not_wait_for_a_retry_under_way(
    wire: WireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_core, "INDEX_RETRY_INTERVAL", 0.0)
    wire.fail_next("createIndexes", MAX_TIME_EXPIRED, Fault("hold"))

    async def go() -> None:
        async with agent_datastore.connect_async(wire.uri, serverSelectionTimeoutMS=10_000) as s:
            proxy = s.proxy("u", "a")
            await proxy.get("k")  # the first build, cut off
            retrying = asyncio.create_task(proxy.get("k"))
            for _ in range(3000):  # a guard, not a measurement
                if wire.held():
                    break
                await asyncio.sleep(0.01)
            assert wire.held() == 1
            assert await proxy.get("other", "absent") == "absent"
            wire.release_held()
            await retrying

    asyncio.run(go())
    assert names(wire.take())[-3:] == ["createIndexes", "find", "find"]


def test_a_build_cut_off_for_ensure_indexes_is_an_error(wire: WireServer) -> None:
    """``ensure_indexes()`` waits for the build: the bound it sends is its timeout (a day by
    default), and a build cut off there raises."""
    with wire.connect() as store:
        store.ensure_indexes()
        wire.fail_next("createIndexes", MAX_TIME_EXPIRED)
        wire.indexes = [ID_INDEX]
        with pytest.raises(DataStoreUnavailable):
            store.ensure_indexes(timeout=60)
    first, second = [c for c in wire.take() if "createIndexes" in c]
    # pymongo's timeout() sends what is left of it, less the round trip
    assert (
        ENSURE_INDEXES_TIMEOUT * 1000 - 5_000 < first["maxTimeMS"] <= ENSURE_INDEXES_TIMEOUT * 1000
    )
    assert 55_000 < second["maxTimeMS"] <= 60_000


def test_async_ensure_indexes_waits_with_its_timeout(wire: WireServer) -> None:
    async def go() -> None:
        async with agent_datastore.connect_async(wire.uri, serverSelectionTimeoutMS=10_000) as s:
            await s.ensure_indexes(timeout=120)
            await s.proxy("u", "a").get("k")

    asyncio.run(go())
    commands = wire.take()
    assert names(commands) == ["listIndexes", "createIndexes", "find"]  # nothing more on first use
    assert 115_000 < commands[1]["maxTimeMS"] <= 120_000


@pytest.mark.parametrize(
    ("timeout", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (float("inf"), ValueError),
        (2**31 / 1000, ValueError),  # past MongoDB's longest maxTimeMS
        (float("nan"), ValueError),
        ("60", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_ensure_indexes_refuses_a_timeout_that_is_not_a_positive_number(
    timeout: Any, error: type[Exception]
) -> None:
    with agent_datastore.connect("mongomock://") as store:
        with pytest.raises(error, match="timeout must be"):
            store.ensure_indexes(timeout=timeout)
        store.ensure_indexes(timeout=0.5)


# ------------------------------------------------------------ indexes that do not serve


UNIQUE_KEYS = [("userId", 1), ("agentName", 1), ("namespace", 1), ("key", 1)]


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"key": UNIQUE_KEYS, "unique": True}, None),
        ({"key": UNIQUE_KEYS, "unique": True, "collation": {"locale": "simple"}}, None),
        ({"key": UNIQUE_KEYS, "unique": True, "hidden": True}, "is hidden"),
        ({"key": UNIQUE_KEYS, "unique": True, "partialFilterExpression": {}}, "is partial"),
        ({"key": UNIQUE_KEYS, "unique": True, "sparse": True}, "is sparse"),
        ({"key": UNIQUE_KEYS}, "is not unique"),
        ({"key": UNIQUE_KEYS[:3], "unique": True}, "is not on"),
        ({"key": [("userId", "hashed")], "unique": True}, "is not on"),
        ({"key": [("_fts", "text"), ("_ftsx", 1)]}, "is not on"),
    ],
)
def test_which_unique_index_serves(spec: dict[str, Any], reason: str | None) -> None:
    found = _core.why_not_equivalent_index(spec)
    assert (found is None) is (reason is None)
    assert reason is None or reason in str(found)
    assert _core.is_equivalent_index(spec) is (reason is None)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"key": [("expiresAt", 1)], "expireAfterSeconds": 0, "sparse": True}, None),
        ({"key": [("expiresAt", 1.0)], "expireAfterSeconds": 0}, None),  # sparse or not
        ({"key": [("expiresAt", 1)], "expireAfterSeconds": 0, "hidden": True}, None),  # deletes
        ({"key": [("expiresAt", 1)]}, "is not a TTL index"),
        ({"key": [("expiresAt", 1)], "expireAfterSeconds": 60}, "expireAfterSeconds 60"),
        (
            {
                "key": [("expiresAt", 1)],
                "expireAfterSeconds": 0,
                "partialFilterExpression": {"userId": "u"},
            },
            "is partial",
        ),
        ({"key": [("expiresAt", "hashed")], "expireAfterSeconds": 0}, "is not on"),
    ],
)
def test_which_ttl_index_serves(spec: dict[str, Any], reason: str | None) -> None:
    found = _core.why_not_expiry_index(spec)
    assert (found is None) is (reason is None)
    assert reason is None or reason in str(found)
    assert _core.is_expiry_index(spec) is (reason is None)


def test_doctor_says_why_an_index_does_not_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    with agent_datastore.connect("mongomock://") as store:
        store.ensure_indexes()
        real = store._target.index_information()
        # what a real server lists for indexes an operator hid or made partial
        listed = {
            "_id_": real["_id_"],
            "made_by_hand": {**real[INDEX_NAME], "hidden": True},
            TTL_INDEX_NAME: {**real[TTL_INDEX_NAME], "partialFilterExpression": {"a": 1}},
        }
        monkeypatch.setattr(store._target, "index_information", lambda: listed)
        report = agent_datastore.admin.doctor(store)
        assert report["unique_index"] is None
        assert report["ttl_index"] is None
        assert report["healthy"] is False
        assert report["index_problems"] == [
            "unique index 'made_by_hand' is hidden: queries cannot use it",
            f"TTL index {TTL_INDEX_NAME!r} is partial: it deletes only the documents its "
            "filter selects",
        ]
        result = CliRunner().invoke(cli, ["doctor"], obj={"store": store})
        assert result.exit_code == 1
        assert "unique index:      MISSING (run ensure-indexes)" in result.stdout
        assert "  unique index 'made_by_hand' is hidden: queries cannot use it" in result.stdout


def test_doctor_counts_all_documents_from_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    with agent_datastore.connect("mongomock://") as store:
        store.ensure_indexes()
        store.proxy("u", "a").set_many({"a": 1, "b": 2})
        counted: list[Any] = []
        count_documents = store._target.count_documents

        def recording(filter: Any, **options: Any) -> int:
            counted.append(filter)
            return int(count_documents(filter, **options))

        monkeypatch.setattr(store._target, "count_documents", recording)
        result = CliRunner().invoke(cli, ["doctor", "--json"], obj={"store": store})
        report = json.loads(result.stdout)
        assert report["documents"] == 2
        assert report["documents_estimated"] is True
        assert {} not in counted  # no exact count of the whole collection
        assert len(counted) == 1  # only the documents that break the schema
        text = CliRunner().invoke(cli, ["doctor"], obj={"store": store}).stdout
        assert "documents:         2 (estimated from metadata)" in text


# ---------------------------------------------------------------------------------- w=0


class RecordingClient(pymongo.MongoClient):  # type: ignore[type-arg]
    """pymongo's client, remembering whether it was closed."""

    made: ClassVar[list[RecordingClient]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closed = False
        RecordingClient.made.append(self)

    def close(self) -> None:
        self.closed = True
        super().close()


@pytest.mark.parametrize(
    ("query", "options"),
    [("?w=0", {}), ("", {"w": 0}), ("?w=1", {"w": 0}), ("?W=0", {})],
    ids=["in the URI", "as a keyword", "the keyword wins", "any case"],
)
def test_connect_refuses_unacknowledged_writes(
    monkeypatch: pytest.MonkeyPatch, query: str, options: dict[str, Any]
) -> None:
    monkeypatch.setattr(_store, "MongoClient", RecordingClient)
    RecordingClient.made = []
    uri = f"mongodb://127.0.0.1:{closed_port()}/{query}"
    with pytest.raises(ValueError, match="acknowledged writes"):
        agent_datastore.connect(uri, **options)
    assert [client.closed for client in RecordingClient.made] == [True]  # nothing leaked
    with pytest.raises(ValueError, match="acknowledged writes"):
        agent_datastore.connect_async(uri, **options)


def test_connect_accepts_acknowledged_writes() -> None:
    uri = f"mongodb://127.0.0.1:{closed_port()}/?w=majority"
    with agent_datastore.connect(uri, w=1):
        pass


def test_a_store_refuses_a_collection_with_unacknowledged_writes() -> None:
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{closed_port()}/", connect=False
    )
    try:
        collection = client.db.items.with_options(write_concern=WriteConcern(w=0))
        with pytest.raises(ValueError, match="acknowledged writes"):
            DataStore(collection)
        DataStore(client.db.items)  # the client's default write concern is acknowledged
    finally:
        client.close()


def test_an_async_store_refuses_a_collection_with_unacknowledged_writes() -> None:
    async def go() -> None:
        client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(
            f"mongodb://127.0.0.1:{closed_port()}/"
        )
        try:
            collection = client.db.items.with_options(write_concern=WriteConcern(w=0))
            with pytest.raises(ValueError, match="acknowledged writes"):
                AsyncDataStore(collection)
            AsyncDataStore(client.db.items)
        finally:
            await client.close()

    asyncio.run(go())


def test_the_ensure_indexes_command_takes_a_timeout() -> None:
    with agent_datastore.connect("mongomock://") as store:
        for timeout, exit_code in [("0", 2), ("3000000", 2), ("30", 0)]:
            result = CliRunner().invoke(
                cli, ["ensure-indexes", "--timeout", timeout], obj={"store": store}
            )
            assert result.exit_code == exit_code, result.output
        assert store.collection.index_information().keys() >= {INDEX_NAME, TTL_INDEX_NAME}
