"""The operations across the namespaces of one agent (``find_items``, ``refresh_expiry``),
which the LangGraph store and the store service's search build on: what they send, and what
they answer on the embedded store (and on a real server with MONGODB_URI)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from bson.regex import Regex

from agent_datastore import DataStore, connect
from agent_datastore import _operations as ops
from agent_datastore._core import MAX_TTL, SERVICE_SEARCH_MAX_TIME_MS

from .test_wire_commands import SCOPE, SIMPLE, only_command, without_expiry
from .wire import Fault, WireServer, start_wire_server

NAMESPACES = ["a", "a.b", "a.b.c", "ab", "a-b", "a/", "b", "a.", "é"]


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServer]:
    yield from start_wire_server()


@pytest.fixture
def wired(wire: WireServer) -> Iterator[DataStore]:
    with wire.connect() as store:
        store.ensure_indexes()
        wire.take()
        yield store
    wire.take()


def found(store: DataStore, **arguments: Any) -> list[tuple[str, str]]:
    scope = store.proxy("user-1", "agent-a", arguments.pop("namespace", "a"))._scope
    items = store._run(ops.find_items(scope, store._settings(), **arguments))
    return [(entry.namespace, entry.item.key) for entry in items]


def test_a_subtree_search_is_one_find_on_the_index_in_its_order(
    wire: WireServer, wired: DataStore
) -> None:
    assert found(wired, namespace="a.b", within="subtree", limit=10, offset=5) == []
    command = only_command(wire, "find")
    # user and agent as equalities, then the namespace itself or an anchored literal prefix
    # (one index scan over a point and a range), then the live condition
    assert without_expiry(command["filter"]) == dict(
        [*SCOPE[:2], ("namespace", {"$in": ["a.b", Regex("^a\\.b\\.")]})]
    )
    assert command["sort"] == {"namespace": 1, "key": 1}
    assert (command["skip"], command["limit"]) == (5, 10)
    assert command["collation"] == SIMPLE
    assert command["projection"]["namespace"] == 1


def test_gets_in_one_namespace_are_one_find_of_their_keys(
    wire: WireServer, wired: DataStore
) -> None:
    found(wired, namespace="ns", within="namespace", keys=["k2", "k1", "k2"])
    command = only_command(wire, "find")
    assert without_expiry(command["filter"]) == dict([*SCOPE, ("key", {"$in": ["k2", "k1"]})])
    assert "skip" not in command or command["skip"] == 0
    assert "limit" not in command or command["limit"] == 0


def test_a_search_of_the_whole_agent_names_no_namespace(wire: WireServer, wired: DataStore) -> None:
    found(wired, within="agent")
    command = only_command(wire, "find")
    assert without_expiry(command["filter"]) == dict(SCOPE[:2])


def test_the_refresh_is_one_update_of_the_items_that_expire(
    wire: WireServer, wired: DataStore
) -> None:
    scope = wired.proxy("user-1", "agent-a")._scope
    settings = wired._settings()
    items = [("a", "k1"), ("b", "k2"), ("a", "k3"), ("a", "k1")]
    wired._run(ops.refresh_expiry(scope, settings, items, "ttl_ms"))
    command = only_command(wire, "update")
    (statement,) = command["updates"]
    assert statement["multi"] is True
    assert not statement.get("upsert")
    # each branch whole (a rooted $or is planned branch by branch, on the unique index):
    # live and expiring, with a length in whole milliseconds that is not an array
    rest = [
        ("expiresAt", {"$gt": settings.now.replace(tzinfo=None)}),
        (
            "metadata.ttl_ms",
            {
                "$gte": 1,
                "$lte": MAX_TTL // timedelta(milliseconds=1),
                "$not": {"$type": "array"},
            },
        ),
    ]
    assert statement["q"] == {
        "$or": [
            dict([*SCOPE[:2], ("namespace", "a"), ("key", {"$in": ["k1", "k3"]}), *rest]),
            dict([*SCOPE[:2], ("namespace", "b"), ("key", {"$in": ["k2"]}), *rest]),
        ]
    }
    moment = settings.now.replace(tzinfo=None)
    assert statement["u"] == [{"$set": {"expiresAt": {"$add": [moment, "$metadata.ttl_ms"]}}}]
    assert wired._run(ops.refresh_expiry(scope, settings, [], "ttl_ms")) == 0
    assert wire.take() == []  # nothing to refresh, nothing sent


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"within": "tree"}, ValueError),
        ({"within": None}, TypeError),
        ({"within": "agent", "limit": 0}, ValueError),
        ({"within": "agent", "offset": -1}, ValueError),
        ({"within": "agent", "offset": 1.0}, TypeError),
        # a router sends its shards limit + skip, which overflows past int64
        ({"within": "agent", "offset": 2**63 - 1, "limit": 10}, ValueError),
        ({"within": "namespace", "keys": "abc"}, TypeError),
        ({"within": "namespace", "keys": [""]}, ValueError),
    ],
)
def test_bad_arguments_send_nothing(
    wire: WireServer, wired: DataStore, arguments: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        found(wired, **arguments)
    assert wire.take() == []


@pytest.mark.parametrize(
    ("items", "ttl_field", "error"),
    [
        ([("a",)], "ttl_ms", TypeError),
        ("ab", "ttl_ms", TypeError),
        ([("", "k")], "ttl_ms", ValueError),
        ([("a", "k")], "$where", ValueError),
        ([("a", "k")], "a.b", ValueError),
        ([("a", "k")], 3, TypeError),
    ],
)
def test_bad_refreshes_send_nothing(
    wire: WireServer, wired: DataStore, items: Any, ttl_field: Any, error: type[Exception]
) -> None:
    scope = wired.proxy("user-1", "agent-a")._scope
    with pytest.raises(error):
        wired._run(ops.refresh_expiry(scope, wired._settings(), items, ttl_field))
    assert wire.take() == []


# ----------------------------------------------------------------------- behaviour


@pytest.fixture
def clock() -> list[datetime]:
    # near the real time: the embedded store's TTL monitor deletes by the real clock
    return [datetime.now(timezone.utc).replace(microsecond=0)]


@pytest.fixture
def store(clock: list[datetime]) -> Iterator[DataStore]:
    with connect("mongomock://", clock=lambda: clock[0]) as embedded:
        for namespace in NAMESPACES:
            proxy = embedded.proxy("user-1", "agent-a", namespace)
            proxy.set_many({"k2": 2, "k1": 1})
        embedded.proxy("user-2", "agent-a", "a").set("k1", "other user")
        embedded.proxy("user-1", "agent-b", "a").set("k1", "other agent")
        yield embedded


def test_a_subtree_is_the_namespace_and_those_below_it_at_a_label_boundary(
    store: DataStore,
) -> None:
    assert found(store, within="subtree") == [
        ("a", "k1"),
        ("a", "k2"),
        ("a.", "k1"),
        ("a.", "k2"),
        ("a.b", "k1"),
        ("a.b", "k2"),
        ("a.b.c", "k1"),
        ("a.b.c", "k2"),
    ]


def test_the_agent_s_items_come_in_utf8_order_skipped_and_limited(store: DataStore) -> None:
    everything = found(store, within="agent")
    assert everything == sorted((n, k) for n in NAMESPACES for k in ("k1", "k2"))
    assert found(store, within="agent", offset=3, limit=4) == everything[3:7]
    assert found(store, within="agent", offset=100) == []


def test_keys_in_one_namespace(store: DataStore) -> None:
    assert found(store, namespace="a.b", within="namespace", keys=["k2", "zz", "k1"]) == [
        ("a.b", "k1"),
        ("a.b", "k2"),
    ]


def test_the_items_found_are_whole_and_expired_ones_are_not_found(
    store: DataStore, clock: list[datetime]
) -> None:
    proxy = store.proxy("user-1", "agent-a", "a.b")
    proxy.set("k3", {"x": [1, 2**70]}, {"note": "n"}, ttl=60)
    scope = proxy._scope
    (entry,) = store._run(ops.find_items(scope, store._settings(), within="subtree", keys=["k3"]))
    assert entry.namespace == "a.b"
    assert entry.item == proxy.get_item("k3")
    clock[0] += timedelta(seconds=60)
    assert found(store, namespace="a.b", within="namespace", keys=["k3"]) == []


def test_refresh_restarts_the_expiry_of_live_items_with_a_stored_length_only(
    store: DataStore, clock: list[datetime]
) -> None:
    proxy = store.proxy("user-1", "agent-a", "a")
    proxy.set("short", 1, {"ttl_ms": 60_000}, ttl=60)
    proxy.set("no-length", 2, ttl=60)
    proxy.set("no-expiry", 3, {"ttl_ms": 60_000})
    proxy.set("bad-length", 4, {"ttl_ms": "60000"}, ttl=60)
    # an array's elements could meet the bounds one each, and $add would fail the update
    proxy.set("array-length", 6, {"ttl_ms": [-1, 60_000]}, ttl=60)
    proxy.set("gone", 5, {"ttl_ms": 60_000}, ttl=10)
    other = store.proxy("user-2", "agent-a", "a")
    other.set("short", 1, {"ttl_ms": 60_000}, ttl=60)
    before = {key: proxy.get_item(key) for key in ("short", "no-length", "no-expiry")}
    clock[0] += timedelta(seconds=30)
    keys = ["short", "no-length", "no-expiry", "bad-length", "array-length", "gone", "absent"]
    items = [("a", key) for key in keys]
    changed = store._run(ops.refresh_expiry(proxy._scope, store._settings(), items, "ttl_ms"))
    assert changed == 1
    refreshed = proxy.get_item("short")
    assert refreshed is not None
    assert before["short"] is not None
    assert refreshed.expiresAt == clock[0] + timedelta(seconds=60)
    # the item is not written: its version and last write stay
    assert (refreshed.version, refreshed.updatedAt) == (1, before["short"].updatedAt)
    assert proxy.get_item("no-length") == before["no-length"]
    assert proxy.get_item("no-expiry") == before["no-expiry"]
    untouched = other.get_item("short")
    assert untouched is not None
    assert untouched.expiresAt == clock[0] + timedelta(seconds=30)
    clock[0] += timedelta(seconds=45)
    assert proxy.get("short") == 1
    assert proxy.get("no-length") is None


def test_the_services_search_is_bounded_in_time_and_says_so_when_it_is_cut_off(
    wire: WireServer, wired: DataStore
) -> None:
    scope = wired.proxy("user-1", "agent-a")._scope
    search = ops.find_items_within(
        scope, wired._settings(), within="agent", value_filter={"a": 1}, limit=10, max_bytes=1
    )
    wired._run(search)
    command = only_command(wire, "find")
    assert command["maxTimeMS"] == SERVICE_SEARCH_MAX_TIME_MS
    wire.fail_next("find", Fault("error", 50, "operation exceeded time limit"))
    search = ops.find_items_within(scope, wired._settings(), within="agent", max_bytes=1)
    with pytest.raises(ValueError, match="did not finish within its time limit"):
        wired._run(search)
    only_command(wire, "find")  # sent once: asking again would time out again
    # a proxy's own search has no bound of its own: the caller's client decides
    found(wired, within="agent")
    assert "maxTimeMS" not in only_command(wire, "find")
