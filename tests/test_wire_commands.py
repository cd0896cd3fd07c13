"""What goes over the wire: the exact command each operation sends, through a real
pymongo client to a wire-protocol test server."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from bson.int64 import Int64

from agent_datastore import AgentDataStoreProxy

from .wire import WireServer, start_wire_server

SIMPLE = {"locale": "simple"}
INDEX = {
    "name": "userId_1_agentName_1_namespace_1_key_1",
    "unique": True,
    "key": {"userId": 1, "agentName": 1, "namespace": 1, "key": 1},
    "collation": SIMPLE,
}
SCOPE = [("userId", "user-1"), ("agentName", "agent-a"), ("namespace", "ns")]


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServer]:
    yield from start_wire_server()


@pytest.fixture
def proxy(wire: WireServer) -> Iterator[AgentDataStoreProxy]:
    """A proxy of a new store whose index is already ensured, and no command recorded."""
    with wire.connect() as store:
        store.ensure_indexes()
        wire.take()
        yield store.proxy("user-1", "agent-a", "ns")
    wire.take()


def only_command(wire: WireServer, name: str) -> dict[str, Any]:
    commands = wire.take()
    assert [next(iter(c)) for c in commands] == [name]
    return commands[0]


def assert_targeted(query: dict[str, Any], *, namespace: bool = True) -> None:
    """userId and agentName come first, as plain equalities, so the index and a sharded
    cluster's router can use them."""
    items = list(query.items())
    expected = SCOPE if namespace else SCOPE[:2]
    assert items[: len(expected)] == expected
    assert all(type(value) is str for _, value in items[: len(expected)])


# ------------------------------------------------------------------------- one command each

OPERATIONS: dict[str, tuple[Callable[[AgentDataStoreProxy], Any], str]] = {
    "get": (lambda p: p.get("k"), "find"),
    "set": (lambda p: p.set("k", {"v": 1}, metadata={"m": 1}), "update"),
    "delete": (lambda p: p.delete("k"), "delete"),
    "list_keys": (lambda p: p.list_keys(), "find"),
    "list_keys prefix": (lambda p: p.list_keys(prefix="a."), "find"),
    "list_namespaces": (lambda p: p.list_namespaces(), "distinct"),
    "clear": (lambda p: p.clear(), "delete"),
    "get_many": (lambda p: p.get_many(["a", "b", "a"]), "find"),
    "set_many": (lambda p: p.set_many({"a": 1, "b": 2}), "update"),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_each_operation_sends_exactly_one_targeted_command(
    wire: WireServer, proxy: AgentDataStoreProxy, operation: str
) -> None:
    call, name = OPERATIONS[operation]
    call(proxy)
    command = only_command(wire, name)
    assert command[name] == "items"
    assert command["$db"] == "agent_datastore"
    # binary comparison whatever the collection's default collation: "alice" is not "Alice"
    if name == "find":
        assert_targeted(command["filter"])
        assert command["collation"] == SIMPLE
    elif name == "distinct":
        assert_targeted(command["query"], namespace=False)
        assert command["collation"] == SIMPLE
    else:
        statements = command["updates" if name == "update" else "deletes"]
        for statement in statements:
            assert_targeted(statement["q"])
            assert statement["collation"] == SIMPLE


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.get_many([]),
        lambda p: p.get_many(()),
        lambda p: p.set_many({}),
        lambda p: p.use_namespace("other"),
    ],
    ids=["get_many([])", "get_many(())", "set_many({})", "use_namespace"],
)
def test_empty_batches_and_use_namespace_send_nothing(
    wire: WireServer, proxy: AgentDataStoreProxy, call: Callable[[AgentDataStoreProxy], Any]
) -> None:
    call(proxy)
    assert wire.take() == []


def test_first_use_creates_the_index_once_with_its_exact_spec(wire: WireServer) -> None:
    with wire.connect() as store:
        assert wire.take() == []  # connect and proxy send nothing
        proxy = store.proxy("user-1", "agent-a", "ns")
        proxy.get("k")
        proxy.set("k", 1)
        proxy.list_namespaces()
        commands = wire.take()
    assert [next(iter(c)) for c in commands] == ["createIndexes", "find", "update", "distinct"]
    create = commands[0]
    assert create["createIndexes"] == "items"
    assert [dict(index) for index in create["indexes"]] == [INDEX]
    assert list(create["indexes"][0]["key"].items()) == list(INDEX["key"].items())  # order


# ------------------------------------------------------------------------ each command shape


def test_get_finds_one_document_projecting_the_value(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    wire.find_batches.append([{"value": {"n": Int64(2**40), "s": "x"}}])
    assert proxy.get("k") == {"n": 2**40, "s": "x"}
    command = only_command(wire, "find")
    assert command["filter"] == dict([*SCOPE, ("key", "k")])
    assert command["projection"] == {"value": 1, "_id": 0}
    assert command["limit"] == 1
    assert command["singleBatch"] is True


def test_get_of_a_missing_key_returns_the_default(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    assert proxy.get("k", default="fallback") == "fallback"
    only_command(wire, "find")


def test_set_sends_one_upsert_with_set_and_set_on_insert(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    proxy.set("k", {"a.b": [1, 2**70]}, metadata={"version": "1.0", "by": "x"})
    command = only_command(wire, "update")
    assert command["ordered"] is True
    (statement,) = command["updates"]
    assert statement["q"] == dict([*SCOPE, ("key", "k")])
    assert statement["upsert"] is True
    assert statement["multi"] is False
    update = statement["u"]
    assert list(update) == ["$set", "$setOnInsert"]
    assert list(update["$set"]) == ["value", "updatedAt", "metadata.version", "metadata.by"]
    assert update["$set"]["value"] == {
        "__ads__": "dict",
        "items": [["a.b", [1, {"__ads__": "int", "digits": str(2**70)}]]],
    }
    assert update["$set"]["metadata.version"] == "1.0"
    assert isinstance(update["$set"]["updatedAt"], datetime)
    assert update["$setOnInsert"] == {"createdAt": update["$set"]["updatedAt"]}


def test_set_without_metadata_creates_empty_metadata_only_on_insert(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    proxy.set("k", 1)
    update = only_command(wire, "update")["updates"][0]["u"]
    assert list(update["$set"]) == ["value", "updatedAt"]
    assert update["$setOnInsert"] == {"createdAt": update["$set"]["updatedAt"], "metadata": {}}


def test_set_many_sends_one_unordered_update_holding_every_item(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    items = {f"key-{i:04d}": {"i": i} for i in range(1000)}
    assert proxy.set_many(items, metadata={"batch": "b1"}) == 1000
    command = only_command(wire, "update")
    assert command["ordered"] is False
    statements = command["updates"]
    assert [s["q"]["key"] for s in statements] == list(items)
    times = {s["u"]["$set"]["updatedAt"] for s in statements}
    assert len(times) == 1  # one timestamp for the batch
    for statement in statements:
        assert statement["upsert"] is True
        assert list(statement["u"]["$set"]) == ["value", "updatedAt", "metadata.batch"]
        assert list(statement["u"]["$setOnInsert"]) == ["createdAt"]


def test_get_many_sends_one_find_with_in(wire: WireServer, proxy: AgentDataStoreProxy) -> None:
    wire.find_batches.append([{"key": "b", "value": 2}, {"key": "a", "value": Int64(1)}])
    result = proxy.get_many(["a", "zz", "b", "a"])
    assert list(result.items()) == [("a", 1), ("b", 2)]
    assert type(result["a"]) is int
    command = only_command(wire, "find")
    assert command["filter"] == dict([*SCOPE, ("key", {"$in": ["a", "zz", "b"]})])
    assert command["projection"] == {"key": 1, "value": 1, "_id": 0}
    assert command["batchSize"] >= 1000  # one round trip for the usual batch


@pytest.mark.parametrize(
    ("prefix", "pattern"),
    [
        ("analysis:", "^analysis:"),
        ("a.b", r"^a\.b"),
        ("(x)*[y]?+{2}|^$\\", r"^\(x\)\*\[y\]\?\+\{2\}\|\^\$\\"),
        ("é ü", r"^é\ ü"),
        ("a\x00b", "^a\\x00b"),
        ("line\nnext", "^line\\\nnext"),
    ],
)
def test_list_keys_sends_an_anchored_escaped_regex_covered_and_sorted(
    wire: WireServer, proxy: AgentDataStoreProxy, prefix: str, pattern: str
) -> None:
    wire.find_batches.append([{"key": prefix + "1"}, {"key": prefix + "2"}])
    assert proxy.list_keys(prefix=prefix) == [prefix + "1", prefix + "2"]
    command = only_command(wire, "find")
    regex = command["filter"]["key"]["$regex"]
    assert regex == pattern
    assert "\x00" not in regex  # a BSON regex cannot hold NUL
    assert re.match(regex, prefix + "tail")
    assert not re.match(regex, "x" + prefix)
    assert list(command["filter"]) == ["userId", "agentName", "namespace", "key"]
    assert "$options" not in command["filter"]["key"]  # no i, m or x flag
    assert command["projection"] == {"key": 1, "_id": 0}
    assert command["sort"] == {"key": 1}


def test_list_keys_without_prefix_sends_no_regex(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    proxy.list_keys(prefix="")
    command = only_command(wire, "find")
    assert command["filter"] == dict(SCOPE)
    assert command["sort"] == {"key": 1}


def test_list_namespaces_sends_one_distinct_on_user_and_agent(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    wire.distinct_values = ["b", "a", "default"]
    assert proxy.list_namespaces() == ["a", "b", "default"]
    wire.distinct_values = []
    command = only_command(wire, "distinct")
    assert command["key"] == "namespace"
    assert command["query"] == dict(SCOPE[:2])


def test_delete_sends_one_delete_of_one_key(wire: WireServer, proxy: AgentDataStoreProxy) -> None:
    for deleted, expected in [(1, True), (0, False)]:
        wire.deleted = deleted
        assert proxy.delete("k") is expected
        (statement,) = only_command(wire, "delete")["deletes"]
        assert statement["q"] == dict([*SCOPE, ("key", "k")])
        assert statement["limit"] == 1


def test_clear_sends_one_delete_of_the_namespace(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    wire.deleted = 7
    assert proxy.clear() == 7
    wire.deleted = 0
    (statement,) = only_command(wire, "delete")["deletes"]
    assert statement["q"] == dict(SCOPE)
    assert statement["limit"] == 0
