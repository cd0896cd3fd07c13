"""What goes over the wire: the exact command each operation sends, through a real
pymongo client to a wire-protocol test server."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from bson.int64 import Int64
from click.testing import CliRunner

from agent_datastore import AgentDataStoreProxy, VersionConflict
from agent_datastore import _operations as ops
from agent_datastore._core import FIRST_USE_INDEX_BUILD_MS, KEY_PAGE_SIZE
from agent_datastore.cli import cli

from .wire import WireServer, start_wire_server

SIMPLE = {"locale": "simple"}
INDEX = {
    "name": "userId_1_agentName_1_namespace_1_key_1",
    "unique": True,
    "key": {"userId": 1, "agentName": 1, "namespace": 1, "key": 1},
    "collation": SIMPLE,
}
TTL_INDEX = {
    "name": "expiresAt_1",
    "key": {"expiresAt": 1},
    "expireAfterSeconds": 0,
    "sparse": True,
}
SCOPE = [("userId", "user-1"), ("agentName", "agent-a"), ("namespace", "ns")]
ITEM = [*SCOPE, ("key", "k")]


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


def without_expiry(query: dict[str, Any]) -> dict[str, Any]:
    """``query`` less its expiry condition, which must come last, on its own field: the index
    bounds come from the fields before it, and the server applies it to what the index finds."""
    *rest, (name, condition) = query.items()
    assert name == "expiresAt"
    (moment,) = condition["$not"].values()
    assert condition == {"$not": {"$lte": moment}}
    assert isinstance(moment, datetime)
    return dict(rest)


def stage_fields(pipeline: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    return [(name, list(spec)) for stage in pipeline for name, spec in stage.items()]


# ------------------------------------------------------------------------- one command each

OPERATIONS: dict[str, tuple[Callable[[AgentDataStoreProxy], Any], str]] = {
    "get": (lambda p: p.get("k"), "find"),
    "set": (lambda p: p.set("k", {"v": 1}, metadata={"m": 1}), "update"),
    "delete": (lambda p: p.delete("k"), "findAndModify"),
    "list_keys": (lambda p: p.list_keys(), "find"),
    "list_keys prefix": (lambda p: p.list_keys(prefix="a."), "find"),
    "list_namespaces": (lambda p: p.list_namespaces(), "aggregate"),
    "clear": (lambda p: p.clear(), "delete"),
    "get_many": (lambda p: p.get_many(["a", "b", "a"]), "find"),
    "delete_many": (lambda p: p.delete_many(["a", "b", "a"]), "delete"),
    "set_many": (lambda p: p.set_many({"a": 1, "b": 2}), "update"),
    "get_item": (lambda p: p.get_item("k"), "find"),
    "set ttl": (lambda p: p.set("k", 1, ttl=30), "update"),
    "set if absent": (lambda p: p.set("k", 1, if_version=0), "findAndModify"),
    "set if_version": (lambda p: p.set("k", 1, if_version=2), "findAndModify"),
    "increment": (lambda p: p.increment("k", 3), "findAndModify"),
    "delete if absent": (lambda p: p.delete("k", if_version=0), "find"),
    "list_keys page": (lambda p: p.list_keys("a", limit=10, start_after="ab"), "find"),
    "iter_keys": (lambda p: list(p.iter_keys()), "find"),
    "list_items": (lambda p: p.list_items(limit=3), "find"),
    "set_many ttl": (lambda p: p.set_many({"a": 1}, ttl=5), "update"),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_each_operation_sends_exactly_one_targeted_command(
    wire: WireServer, proxy: AgentDataStoreProxy, operation: str
) -> None:
    call, name = OPERATIONS[operation]
    with contextlib.suppress(VersionConflict):  # the server here holds no item at version 2
        call(proxy)
    command = only_command(wire, name)
    assert command[name] == "items"
    assert command["$db"] == "agent_datastore"
    # binary comparison whatever the collection's default collation: "alice" is not "Alice"
    if name == "find":
        assert_targeted(command["filter"])
        without_expiry(command["filter"])
        assert command["collation"] == SIMPLE
    elif name == "aggregate":
        assert_targeted(command["pipeline"][0]["$match"], namespace=False)
        assert command["collation"] == SIMPLE
    elif name == "findAndModify":
        # the filter is exactly the unique index's fields, so the server itself retries an
        # upsert that races another
        assert command["query"] == dict(ITEM)
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
        lambda p: p.delete_many([]),
        lambda p: p.delete_many(iter(())),
        lambda p: p.use_namespace("other"),
    ],
    ids=[
        "get_many([])",
        "get_many(())",
        "set_many({})",
        "delete_many([])",
        "delete_many(iter(()))",
        "use_namespace",
    ],
)
def test_empty_batches_and_use_namespace_send_nothing(
    wire: WireServer, proxy: AgentDataStoreProxy, call: Callable[[AgentDataStoreProxy], Any]
) -> None:
    call(proxy)
    assert wire.take() == []


def test_first_use_creates_the_indexes_once_with_their_exact_spec(wire: WireServer) -> None:
    with wire.connect() as store:
        assert wire.take() == []  # connect and proxy send nothing
        proxy = store.proxy("user-1", "agent-a", "ns")
        proxy.get("k")
        proxy.set("k", 1)
        proxy.list_namespaces()
        commands = wire.take()
    names = [next(iter(c)) for c in commands]
    # both indexes are missing: one bounded command creates them together
    assert names == ["listIndexes", "createIndexes", "find", "update", "aggregate"]
    creation = commands[1]
    assert [dict(index) for index in creation["indexes"]] == [INDEX, TTL_INDEX]
    assert list(creation["indexes"][0]["key"].items()) == list(INDEX["key"].items())  # order
    assert creation["maxTimeMS"] == FIRST_USE_INDEX_BUILD_MS


# ------------------------------------------------------------------------ each command shape


def test_get_finds_one_live_document_projecting_the_value(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    wire.find_batches.append([{"value": {"n": Int64(2**40), "s": "x"}}])
    assert proxy.get("k") == {"n": 2**40, "s": "x"}
    command = only_command(wire, "find")
    assert without_expiry(command["filter"]) == dict(ITEM)
    assert command["projection"] == {"value": 1, "_id": 0}
    assert command["limit"] == 1
    assert command["singleBatch"] is True


def test_get_of_a_missing_key_returns_the_default(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    assert proxy.get("k", default="fallback") == "fallback"
    only_command(wire, "find")


def test_get_item_projects_everything_but_the_scope(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    moment = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)
    stored = {"key": "k", "value": [1], "metadata": {"m": 1}, "createdAt": moment}
    wire.find_batches.append([{**stored, "updatedAt": moment, "version": 4}])
    item = proxy.get_item("k")
    assert item is not None
    assert (item.value, item.metadata, item.version, item.expiresAt) == ([1], {"m": 1}, 4, None)
    command = only_command(wire, "find")
    assert without_expiry(command["filter"]) == dict(ITEM)
    assert command["projection"] == {
        "_id": 0,
        "key": 1,
        "value": 1,
        "metadata": 1,
        "createdAt": 1,
        "updatedAt": 1,
        "version": 1,
        "expiresAt": 1,
    }


def test_set_sends_one_upsert_pipeline_of_literals(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    proxy.set("k", {"a.b": [1, 2**70]}, metadata={"version": "1.0", "by": "$x"})
    command = only_command(wire, "update")
    assert command["ordered"] is True
    (statement,) = command["updates"]
    assert statement["q"] == dict(ITEM)  # only the unique index's fields: no expiry here
    assert statement["upsert"] is True
    assert statement["multi"] is False
    pipeline = statement["u"]
    assert stage_fields(pipeline) == [
        ("$set", ["__ads_live"]),
        ("$set", ["value", "metadata", "createdAt", "updatedAt", "version", "expiresAt"]),
        ("$set", ["metadata.version", "metadata.by"]),
        ("$unset", ["__ads_live"]),
    ]
    fields = pipeline[1]["$set"]
    # every value the caller gave is a $literal, so "$x" is never read as a field path
    assert fields["value"] == {
        "$literal": {
            "__ads__": "dict",
            "items": [["a.b", [1, {"__ads__": "int", "digits": str(2**70)}]]],
        }
    }
    assert pipeline[2]["$set"] == {
        "metadata.version": {"$literal": "1.0"},
        "metadata.by": {"$literal": "$x"},
    }
    now = fields["updatedAt"]
    assert isinstance(now, datetime)
    assert fields["createdAt"] == {"$cond": ["$__ads_live", "$createdAt", now]}
    assert fields["version"] == {
        "$cond": ["$__ads_live", {"$add": [{"$ifNull": ["$version", 1]}, 1]}, 1]
    }
    assert fields["metadata"] == {"$cond": ["$__ads_live", "$metadata", {"$literal": {}}]}
    assert fields["expiresAt"] == "$$REMOVE"  # a set without ttl never expires


def test_set_without_metadata_has_no_metadata_stage(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    proxy.set("k", 1)
    pipeline = only_command(wire, "update")["updates"][0]["u"]
    assert [name for stage in pipeline for name in stage] == ["$set", "$set", "$unset"]


def test_set_with_ttl_writes_expires_at_from_the_same_now(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    proxy.set("k", 1, ttl=timedelta(minutes=5))
    fields = only_command(wire, "update")["updates"][0]["u"][1]["$set"]
    assert fields["expiresAt"] - fields["updatedAt"] == timedelta(minutes=5)


def test_set_many_sends_one_unordered_update_holding_every_item(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    items = {f"key-{i:04d}": {"i": i} for i in range(1000)}
    assert proxy.set_many(items, metadata={"batch": "b1"}, ttl=60) == 1000
    command = only_command(wire, "update")
    assert command["ordered"] is False
    statements = command["updates"]
    assert [s["q"]["key"] for s in statements] == list(items)
    times = {s["u"][1]["$set"]["updatedAt"] for s in statements}
    assert len(times) == 1  # one timestamp for the batch
    for statement in statements:
        assert statement["upsert"] is True
        assert stage_fields(statement["u"])[2] == ("$set", ["metadata.batch"])
        fields = statement["u"][1]["$set"]
        assert fields["expiresAt"] - fields["updatedAt"] == timedelta(seconds=60)


BEFORE_AT_VERSION_3 = {"version": 3, "createdAt": datetime(2026, 1, 1, tzinfo=timezone.utc)}


@pytest.mark.parametrize(
    ("if_version", "before", "conflict"),
    [
        (0, None, None),
        (0, BEFORE_AT_VERSION_3, 3),
        (3, BEFORE_AT_VERSION_3, None),
        (2, BEFORE_AT_VERSION_3, 3),
        (3, None, 0),
    ],
)
def test_set_if_version_is_one_find_and_modify_that_reports_what_it_found(
    wire: WireServer,
    proxy: AgentDataStoreProxy,
    if_version: int,
    before: dict[str, Any] | None,
    conflict: int | None,
) -> None:
    wire.found_and_modified.append(before)
    if conflict is None:
        proxy.set("k", "v", if_version=if_version)
    else:
        with pytest.raises(VersionConflict) as caught:
            proxy.set("k", "v", if_version=if_version)
        assert caught.value.current_version == conflict
    command = only_command(wire, "findAndModify")
    assert command["query"] == dict(ITEM)
    assert command["upsert"] is (if_version == 0)  # an item at version N is never created
    assert command["new"] is False  # the document as it was: the client replays the decision
    assert command["fields"] == {"version": 1, "createdAt": 1, "expiresAt": 1, "_id": 0}
    pipeline = command["update"]
    guard = pipeline[1]["$set"]["__ads_ok"]
    if if_version == 0:
        assert guard == {"$not": ["$__ads_live"]}
    else:
        assert guard == {
            "$and": ["$__ads_live", {"$eq": [{"$ifNull": ["$version", 1]}, if_version]}]
        }
    # where the guard fails, every field is written back as it was: no change at all
    assert pipeline[2]["$set"]["value"] == {"$cond": ["$__ads_ok", {"$literal": "v"}, "$value"]}
    assert pipeline[-1] == {"$unset": ["__ads_live", "__ads_ok"]}


@pytest.mark.parametrize(("before", "result"), [(None, 3), ({"value": Int64(39)}, 42)])
def test_increment_is_one_atomic_find_and_modify(
    wire: WireServer,
    proxy: AgentDataStoreProxy,
    before: dict[str, Any] | None,
    result: int,
) -> None:
    if before is not None:
        before = {**before, "createdAt": datetime(2026, 1, 1, tzinfo=timezone.utc)}
    wire.found_and_modified.append(before)
    assert proxy.increment("k", 3) == result
    command = only_command(wire, "findAndModify")
    assert command["query"] == dict(ITEM)
    assert command["upsert"] is True
    fields = command["update"][2]["$set"]
    assert fields["value"] == {
        "$cond": [
            "$__ads_ok",
            {"$cond": ["$__ads_live", {"$add": ["$value", 3]}, 3]},
            "$value",
        ]
    }


def test_delete_if_version_is_one_conditional_delete(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    wire.deleted = 1
    assert proxy.delete("k", if_version=1) is True
    wire.deleted = 0
    (statement,) = only_command(wire, "delete")["deletes"]
    query = without_expiry({k: v for k, v in statement["q"].items() if k != "version"})
    assert query == dict(ITEM)
    # items written before versions existed count as version 1
    assert statement["q"]["version"] == {"$in": [1, None]}


def test_a_refused_delete_if_version_then_reads_the_version_to_report_it(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    wire.find_batches.append([{"version": 5, "createdAt": datetime(2026, 1, 1)}])
    with pytest.raises(VersionConflict) as caught:
        proxy.delete("k", if_version=4)
    assert caught.value.current_version == 5
    delete, find = wire.take()
    assert delete["deletes"][0]["q"]["version"] == 4
    assert without_expiry(find["filter"]) == dict(ITEM)


def test_get_many_sends_one_find_with_in(wire: WireServer, proxy: AgentDataStoreProxy) -> None:
    wire.find_batches.append([{"key": "b", "value": 2}, {"key": "a", "value": Int64(1)}])
    result = proxy.get_many(["a", "zz", "b", "a"])
    assert list(result.items()) == [("a", 1), ("b", 2)]
    assert type(result["a"]) is int
    command = only_command(wire, "find")
    assert without_expiry(command["filter"]) == dict([*SCOPE, ("key", {"$in": ["a", "zz", "b"]})])
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
def test_list_keys_sends_an_anchored_escaped_regex_on_the_index_sorted(
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
    assert list(command["filter"]) == ["userId", "agentName", "namespace", "key", "expiresAt"]
    assert "$options" not in command["filter"]["key"]  # no i, m or x flag
    assert command["projection"] == {"key": 1, "_id": 0}
    assert command["sort"] == {"key": 1}


def test_list_keys_without_prefix_sends_no_regex(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    proxy.list_keys(prefix="")
    command = only_command(wire, "find")
    assert without_expiry(command["filter"]) == dict(SCOPE)
    assert command["sort"] == {"key": 1}
    assert "limit" not in command


def test_a_page_of_keys_bounds_the_key_on_both_sides_and_limits(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    wire.find_batches.append([{"key": "ab1"}])
    assert proxy.list_keys(prefix="a", limit=2, start_after="ab") == ["ab1"]
    command = only_command(wire, "find")
    # both are bounds on the index's key field, which the server intersects
    assert without_expiry(command["filter"])["key"] == {"$regex": "^a", "$gt": "ab"}
    assert command["limit"] == 2
    assert command["sort"] == {"key": 1}


def test_iter_keys_asks_page_after_page_starting_after_the_last_key(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    size = KEY_PAGE_SIZE
    first = [{"key": f"k{i:06d}"} for i in range(size)]
    wire.find_batches.extend([first, [{"key": "z"}]])
    keys = list(proxy.iter_keys(prefix="k"))
    assert keys == [d["key"] for d in first] + ["z"]
    commands = wire.take()
    assert [c["limit"] for c in commands] == [size, size]
    assert without_expiry(commands[0]["filter"])["key"] == {"$regex": "^k"}
    assert without_expiry(commands[1]["filter"])["key"] == {
        "$regex": "^k",
        "$gt": f"k{size - 1:06d}",
    }


def test_list_items_projects_details_and_the_stored_size_without_values(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    moment = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)
    details = {"metadata": {}, "createdAt": moment, "updatedAt": moment, "version": 2}
    wire.find_batches.append([{"key": "a", **details, "expiresAt": moment, "size": 120}])
    (info,) = proxy.list_items(limit=1)
    assert (info.key, info.size, info.version, info.expiresAt) == ("a", 120, 2, moment)
    command = only_command(wire, "find")
    assert "value" not in command["projection"]
    assert command["projection"]["size"] == {"$bsonSize": "$$ROOT"}
    assert command["sort"] == {"key": 1}
    assert command["limit"] == 1


def test_list_namespaces_sends_one_aggregation_on_user_and_agent(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    later = datetime.now(timezone.utc) + timedelta(days=1)
    wire.aggregate_batches = [[{"_id": "b"}, {"_id": "a", "expiresAt": later}, {"_id": "default"}]]
    assert proxy.list_namespaces() == ["a", "b", "default"]
    command = only_command(wire, "aggregate")
    # every first item is live: the one aggregation, on the index prefix, in index order
    assert command["pipeline"] == [
        {"$match": dict(SCOPE[:2])},
        {"$sort": {"userId": 1, "agentName": 1, "namespace": 1, "key": 1}},
        {"$group": {"_id": "$namespace", "expiresAt": {"$first": "$expiresAt"}}},
    ]
    assert command["collation"] == SIMPLE


@pytest.mark.parametrize(
    ("before", "deleted"),
    [
        (None, False),
        ({"createdAt": datetime(2026, 1, 1)}, True),
        # an expired leftover is deleted too, but it was not there for any reader
        ({"createdAt": datetime(2026, 1, 1), "expiresAt": datetime(2026, 1, 2)}, False),
    ],
)
def test_delete_is_one_find_and_delete_of_one_key(
    wire: WireServer, proxy: AgentDataStoreProxy, before: dict[str, Any] | None, deleted: bool
) -> None:
    wire.found_and_modified.append(before)
    assert proxy.delete("k") is deleted
    command = only_command(wire, "findAndModify")
    assert command["query"] == dict(ITEM)
    assert command["remove"] is True
    assert command["fields"] == {"version": 1, "createdAt": 1, "expiresAt": 1, "_id": 0}


def test_clear_sends_one_delete_of_the_namespace(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    wire.deleted = 7
    assert proxy.clear() == 7
    wire.deleted = 0
    (statement,) = only_command(wire, "delete")["deletes"]
    assert without_expiry(statement["q"]) == dict(SCOPE)
    assert statement["limit"] == 0


def test_delete_many_sends_one_delete_of_the_live_items_under_key_in(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    wire.deleted = 2
    assert proxy.delete_many(["a", "zz", "b", "a"]) == 2  # the server's count is the answer
    wire.deleted = 0
    command = only_command(wire, "delete")
    (statement,) = command["deletes"]
    # the unique index's fields, the keys once each, then the live condition, as get_many
    assert without_expiry(statement["q"]) == dict([*SCOPE, ("key", {"$in": ["a", "zz", "b"]})])
    assert statement["limit"] == 0
    assert statement["collation"] == SIMPLE


def test_cli_delete_looks_with_one_key_only_query_then_deletes_what_it_found(
    wire: WireServer,
) -> None:
    with wire.connect() as store:
        store.ensure_indexes()
        wire.take()
        wire.find_batches.append([{"key": "b"}])
        wire.deleted = 1
        result = CliRunner().invoke(
            cli,
            ["delete", "user-1", "agent-a", "a", "b", "-n", "ns", "--yes"],
            obj={"store": store},
        )
        wire.deleted = 0
    assert result.exit_code == 0, result.output
    assert result.stdout == "deleted 1 item: 'b'\n"
    assert "no key 'a' in user-1/agent-a/ns" in result.stderr
    find, delete = wire.take()
    assert without_expiry(find["filter"]) == dict([*SCOPE, ("key", {"$in": ["a", "b"]})])
    assert find["projection"] == {"key": 1, "_id": 0}  # no value is read
    (statement,) = delete["deletes"]
    # only the key that was found (and asked about) is deleted
    assert without_expiry(statement["q"]) == dict([*SCOPE, ("key", {"$in": ["b"]})])


# ------------------------------------------------------------------ the store service's reads


def test_the_services_get_many_reads_in_key_order_and_stops_before_its_byte_budget(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    documents = [
        {"key": "a", "value": 1, "answerSize": 600},
        {"key": "b", "value": 2, "answerSize": 600},
        {"key": "c", "value": 3, "answerSize": 600},
    ]
    wire.find_batches.append(documents)
    store, scope = proxy._store, proxy._scope
    operation = ops.get_many_within(scope, store._settings(), ["c", "zz", "a", "b", "0"], 1_300)
    values, unread, size = store._run(operation)
    # a and b fit in 1,300 bytes; c did not: it and every key after b are to be asked again,
    # and "0" (before b, not found) does not exist
    assert values == {"a": 1, "b": 2}
    assert list(values) == ["a", "b"]
    assert sorted(unread) == ["c", "zz"]
    assert size == 1_200
    command = only_command(wire, "find")
    assert without_expiry(command["filter"]) == dict(
        [*SCOPE, ("key", {"$in": ["c", "zz", "a", "b", "0"]})]
    )
    assert command["sort"] == {"key": 1}
    assert command["projection"] == {
        "key": 1,
        "value": 1,
        "_id": 0,
        "answerSize": {"$bsonSize": "$$ROOT"},
    }


def test_the_services_list_items_measures_metadata_and_says_when_it_stopped_early(
    wire: WireServer, proxy: AgentDataStoreProxy
) -> None:
    now = datetime.now(timezone.utc)
    details = {"metadata": {}, "createdAt": now, "updatedAt": now, "version": 1, "size": 90}
    wire.find_batches.append(
        [{"key": key, **details, "answerSize": 500} for key in ("a", "b", "c")]
    )
    store, scope = proxy._store, proxy._scope
    operation = ops.list_items_within(scope, store._settings(), None, 10, None, 1_000)
    page, complete, size = store._run(operation)
    assert [info.key for info in page] == ["a", "b"]
    assert (complete, size) == (False, 1_000)
    command = only_command(wire, "find")
    assert command["projection"]["answerSize"] == {"$bsonSize": "$metadata"}
    assert "value" not in command["projection"]
    assert command["sort"] == {"key": 1}
    assert command["limit"] == 10
