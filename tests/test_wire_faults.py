"""Faults injected through the wire-protocol test server: what the caller sees, and what was
sent again. The server acts as a replica-set primary, so pymongo retries as in production."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymongo import errors as pe

from agent_datastore import AgentDataStoreProxy, DataStoreError, DataStoreUnavailable
from agent_datastore._core import INDEX_NAME

from .wire import Fault, WireServer, start_wire_server

SOCKET_TIMEOUT_S = 0.3


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServer]:
    yield from start_wire_server()


@pytest.fixture
def proxy(wire: WireServer) -> Iterator[AgentDataStoreProxy]:
    with wire.connect(socketTimeoutMS=int(SOCKET_TIMEOUT_S * 1000)) as store:
        store.ensure_indexes()
        wire.take()
        yield store.proxy("user-1", "agent-a")
    wire.faults.clear()
    wire.take()


def _without_session(command: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in command.items() if k not in ("lsid", "txnNumber", "$clusterTime")}


# Operations pymongo retries once after a network error or a failover error: reads, and
# single-document or batched upserts (retryable writes). clear() and delete_many() delete many
# documents, which is not a retryable write.
RETRIED: dict[str, tuple[Callable[[AgentDataStoreProxy], Any], str]] = {
    "get": (lambda p: p.get("k"), "find"),
    "set": (lambda p: p.set("k", {"v": 1}, metadata={"m": 1}), "update"),
    "delete": (lambda p: p.delete("k"), "findAndModify"),
    "list_keys": (lambda p: p.list_keys(prefix="a"), "find"),
    "list_namespaces": (lambda p: p.list_namespaces(), "aggregate"),
    "get_many": (lambda p: p.get_many(["a", "b"]), "find"),
    "set_many": (lambda p: p.set_many({"a": 1, "b": 2}), "update"),
    "increment": (lambda p: p.increment("k"), "findAndModify"),
    "set if absent": (lambda p: p.set("k", 1, if_version=0), "findAndModify"),
    "delete if_version": (lambda p: p.delete("k", if_version=0), "find"),
}
CLEAR = (lambda p: p.clear(), "delete")
DELETE_MANY = (lambda p: p.delete_many(["a", "b"]), "delete")
EVERY = {**RETRIED, "clear": CLEAR, "delete_many": DELETE_MANY}


# --------------------------------------------------------------- dropped connection, failover


@pytest.mark.parametrize("operation", list(RETRIED))
@pytest.mark.parametrize(
    "fault",
    [
        Fault("hangup"),
        Fault("error", 10107, "not writable primary"),
        Fault("error", 189, "primary stepped down"),
        Fault("error", 11602, "interrupted due to repl state change"),
    ],
    ids=["dropped connection", "NotWritablePrimary", "PrimarySteppedDown", "InterruptedRepl"],
)
def test_one_fault_is_retried_once_and_succeeds(
    wire: WireServer, proxy: AgentDataStoreProxy, operation: str, fault: Fault
) -> None:
    call, name = RETRIED[operation]
    wire.fail_next(name, fault)
    call(proxy)
    first, second = wire.take()
    # the retry is the same command; a write keeps its session and transaction number, so a
    # real server applies it at most once even if the first attempt had gone through
    assert _without_session(first) == _without_session(second)
    if name in ("update", "findAndModify"):
        assert (first["lsid"], first["txnNumber"]) == (second["lsid"], second["txnNumber"])


@pytest.mark.parametrize("operation", list(EVERY))
@pytest.mark.parametrize(
    "fault",
    [Fault("hangup"), Fault("error", 10107, "not writable primary")],
    ids=["dropped connection", "NotWritablePrimary"],
)
def test_a_lasting_fault_raises_unavailable(
    wire: WireServer, proxy: AgentDataStoreProxy, operation: str, fault: Fault
) -> None:
    call, name = EVERY[operation]
    wire.fail_next(name, fault, fault)
    with pytest.raises(DataStoreUnavailable) as caught:
        call(proxy)
    assert caught.value.status_code == 503
    assert isinstance(caught.value.__cause__, (pe.AutoReconnect, pe.NotPrimaryError))
    attempts = wire.take()
    assert len(attempts) == (1 if operation in ("clear", "delete_many") else 2)


def test_clear_is_not_retried_by_the_driver_but_is_safe_to_repeat(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    wire.fail_next("delete", Fault("hangup"))
    with pytest.raises(DataStoreUnavailable):
        proxy.clear()
    wire.deleted = 3
    assert proxy.clear() == 3
    wire.deleted = 0
    first, second = wire.take()
    # the same delete, but for the moment that decides which items have expired
    (first_delete,), (second_delete,) = first["deletes"], second["deletes"]
    first_delete["q"].pop("expiresAt")
    second_delete["q"].pop("expiresAt")
    assert first_delete == second_delete


# ----------------------------------------------------------------------- a server that hangs


@pytest.mark.parametrize("operation", ["get", "set", "set_many", "list_namespaces"])
def test_a_server_that_never_answers_gives_unavailable_within_the_timeout(
    wire: WireServer, proxy: AgentDataStoreProxy, operation: str
) -> None:
    call, name = RETRIED[operation]
    wire.fail_next(name, Fault("hang"), Fault("hang"))
    started = time.monotonic()
    with pytest.raises(DataStoreUnavailable) as caught:
        call(proxy)
    elapsed = time.monotonic() - started
    assert isinstance(caught.value.__cause__, pe.NetworkTimeout)
    # two attempts of SOCKET_TIMEOUT_S each, plus reconnecting: nowhere near pymongo's default
    # of waiting forever
    assert elapsed < 2 * SOCKET_TIMEOUT_S + 5
    assert len(wire.take()) == 2


def test_a_server_that_answers_after_one_timeout_succeeds(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    wire.fail_next("find", Fault("hang"))
    wire.find_batches.append([{"value": 42}])
    assert proxy.get("k") == 42
    assert len(wire.take()) == 2


# ---------------------------------------------------------------------- racing upserts


def test_set_that_loses_an_insert_race_is_sent_once_more_and_succeeds(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    wire.fail_next("update", Fault("write_error", 11000, "E11000 duplicate key error"))
    proxy.set("k", {"v": 1})
    first, second = wire.take()
    assert first["updates"] == second["updates"]


def test_set_that_loses_twice_raises(wire: WireServer, proxy: AgentDataStoreProxy) -> None:
    dup = Fault("write_error", 11000, "E11000 duplicate key error")
    wire.fail_next("update", dup, dup)
    with pytest.raises(DataStoreError) as caught:
        proxy.set("k", 1)
    assert isinstance(caught.value.__cause__, pe.DuplicateKeyError)
    assert len(wire.take()) == 2


def test_set_many_resends_only_the_items_that_lost_a_race(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    wire.fail_next("update", Fault("write_error", 11000, "E11000 duplicate key", index=1))
    assert proxy.set_many({"a": 1, "b": 2, "c": 3}) == 3
    first, second = wire.take()
    assert [s["q"]["key"] for s in first["updates"]] == ["a", "b", "c"]
    assert [s["q"]["key"] for s in second["updates"]] == ["b"]
    assert second["updates"][0] == first["updates"][1]


def test_set_many_reports_other_item_failures(wire: WireServer, proxy: AgentDataStoreProxy) -> None:
    wire.fail_next("update", Fault("write_error", 2, "bad value", index=0))
    with pytest.raises(DataStoreError, match="refused 1 of the batch's writes"):
        proxy.set_many({"a": 1, "b": 2})
    assert len(wire.take()) == 1


# ----------------------------------------------------------------------- write concern


@pytest.mark.parametrize(
    ("operation", "name"),
    [
        ("set", "update"),
        ("set_many", "update"),
        ("delete", "findAndModify"),
        ("increment", "findAndModify"),
    ],
)
def test_an_unsatisfied_write_concern_raises_unavailable(
    wire: WireServer, proxy: AgentDataStoreProxy, operation: str, name: str
) -> None:
    call, _ = RETRIED[operation]
    wire.fail_next(name, Fault("write_concern_error", 64, "waiting for replication timed out"))
    with pytest.raises(DataStoreUnavailable, match="may or may not have been applied"):
        call(proxy)
    assert len(wire.take()) == 1  # not retried: the write may have been applied


def test_a_retryable_write_concern_error_is_retried(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    wire.fail_next("update", Fault("write_concern_error", 91, "shutdown in progress"))
    proxy.set("k", 1)
    first, second = wire.take()
    assert first["txnNumber"] == second["txnNumber"]


def test_document_too_large_on_the_server_names_the_key(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    wire.fail_next(
        "update", Fault("write_error", 17419, "Resulting document after update is larger")
    )
    with pytest.raises(ValueError, match="'big'"):
        proxy.set("big", 1, metadata={"m": 1})
    wire.fail_next(
        "update", Fault("write_error", 17419, "Resulting document after update is larger", index=1)
    )
    with pytest.raises(ValueError, match="'b'"):
        proxy.set_many({"a": 1, "b": 2})
    wire.take()


def test_unauthorized_is_a_clear_error(wire: WireServer, proxy: AgentDataStoreProxy) -> None:
    wire.fail_next("find", Fault("error", 13, "not authorized on agent_datastore"))
    with pytest.raises(DataStoreError, match="not authorized"):
        proxy.get("k")
    wire.take()


# ------------------------------------------------------------------------- the unique index


def test_the_same_index_under_another_name_is_accepted(wire: WireServer) -> None:
    wire.indexes = [
        {"v": 2, "key": {"_id": 1}, "name": "_id_"},
        {
            "v": 2,
            "key": {"userId": 1, "agentName": 1, "namespace": 1, "key": 1.0},
            "name": "made_by_hand",
            "unique": True,
        },
    ]
    with wire.connect() as store:
        proxy = store.proxy("u", "a")
        proxy.get("k")
        proxy.get("k")
    # the unique index is found under its other name; only the TTL index is created
    commands = wire.take()
    assert [next(iter(c)) for c in commands] == ["listIndexes", "createIndexes", "find", "find"]
    assert [index["name"] for index in commands[1]["indexes"]] == ["expiresAt_1"]
    wire.indexes = []


_STORE_KEYS = {"userId": 1, "agentName": 1, "namespace": 1, "key": 1}


@pytest.mark.parametrize(
    ("other", "reason"),
    [
        ({"key": _STORE_KEYS, "name": "not_unique"}, "is not unique"),
        (
            {
                "key": _STORE_KEYS,
                "name": "case_blind",
                "unique": True,
                "collation": {"locale": "en", "strength": 2},
            },
            "compares strings by the 'en' collation",
        ),
        ({"key": _STORE_KEYS, "name": "hidden", "unique": True, "hidden": True}, "is hidden"),
        (
            {
                "key": _STORE_KEYS,
                "name": "partial",
                "unique": True,
                "partialFilterExpression": {"userId": {"$exists": True}},
            },
            "is partial",
        ),
        ({"key": _STORE_KEYS, "name": "sparse", "unique": True, "sparse": True}, "is sparse"),
        (
            {"key": {"userId": 1, "key": 1}, "name": INDEX_NAME, "unique": True},
            "is not on (userId, agentName, namespace, key)",
        ),
    ],
    ids=["not unique", "case-insensitive collation", "hidden", "partial", "sparse", "other keys"],
)
def test_a_conflicting_index_is_a_clear_error(
    wire: WireServer, other: dict[str, Any], reason: str
) -> None:
    """The server refuses the store's index beside one with its keys or name and other
    options (85 or 86); the store lists again, and says which index is in the way and why."""
    wire.fail_next(
        "createIndexes", Fault("error", 85, "Index already exists with a different name")
    )
    wire.indexes = [other]
    with wire.connect() as store, pytest.raises(DataStoreError) as raised:
        store.proxy("u", "a").get("k")
    wire.indexes = []
    assert wire.names() == ["listIndexes", "createIndexes", "listIndexes"]
    message = raised.value.detail
    assert f"unique index {other['name']!r} {reason}" in message
    assert "different name" in message  # what the server said
    wire.take()
