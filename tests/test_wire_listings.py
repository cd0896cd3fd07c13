"""Listings that scale: the admin listings and ``list_namespaces`` read through aggregation
cursors rather than one ``distinct`` reply (capped at 16 MiB), and ``list_namespaces`` settles
a namespace whose first item has expired with the store's own live condition.

The commands are checked through a real pymongo client against the wire-protocol test server
(sync and async); the behaviour on every backend of the ``store`` fixture, with the store's
clock moved past the expiry of some items, as on a server whose TTL monitor has not run yet.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

import agent_datastore
from agent_datastore import AgentDataStoreProxy, DataStore, admin
from agent_datastore import _operations as ops
from agent_datastore._core import LISTING_BATCH_SIZE

from .helpers import MONGODB_URI, REAL_SERVER_SKIP, MovableClock
from .test_wire_async import run_on_both, same_commands
from .test_wire_commands import SCOPE, SIMPLE, without_expiry
from .wire import WireServer, start_wire_server

INDEX_ORDER = {"userId": 1, "agentName": 1, "namespace": 1, "key": 1}
AGENT = dict(SCOPE[:2])
PAST = datetime(2020, 1, 1, tzinfo=timezone.utc)
FUTURE = datetime(2100, 1, 1, tzinfo=timezone.utc)
NAMESPACES_PIPELINE = [
    {"$match": AGENT},
    {"$sort": INDEX_ORDER},
    {"$group": {"_id": "$namespace", "expiresAt": {"$first": "$expiresAt"}}},
]


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServer]:
    yield from start_wire_server()


@pytest.fixture
def wire_store(wire: WireServer) -> Iterator[DataStore]:
    """A store on the wire server, nothing recorded yet; its indexes are never asked for, as
    the admin listings do not create them."""
    with wire.connect() as store:
        yield store
    wire.aggregate_batches.clear()
    wire.find_batches.clear()
    wire.take()


def names(commands: list[dict[str, Any]]) -> list[str]:
    return [next(iter(command)) for command in commands]


def assert_reads_a_cursor(aggregate: dict[str, Any], get_more: dict[str, Any]) -> None:
    """The aggregation asks for large batches, and its getMore continues the same cursor."""
    assert aggregate["cursor"] == {"batchSize": LISTING_BATCH_SIZE}
    assert aggregate["collation"] == SIMPLE
    assert get_more["collection"] == aggregate["aggregate"]
    assert get_more["batchSize"] == LISTING_BATCH_SIZE


# ------------------------------------------------------------------------ admin listings


def test_users_page_through_an_aggregation_cursor(wire: WireServer, wire_store: DataStore) -> None:
    wire.aggregate_batches = [[{"_id": "u3"}, {"_id": "u1"}], [{"_id": "u2"}, {"_id": 7}]]
    assert admin.users(wire_store) == ["u1", "u2", "u3"]  # sorted here; non-strings left out
    aggregate, get_more = wire.take()
    assert names([aggregate, get_more]) == ["aggregate", "getMore"]
    # group by the index's first field, in its order: a DISTINCT_SCAN on a real server
    assert aggregate["pipeline"] == [{"$sort": {"userId": 1}}, {"$group": {"_id": "$userId"}}]
    assert_reads_a_cursor(aggregate, get_more)


def test_agents_page_through_an_aggregation_cursor_on_the_users_prefix(
    wire: WireServer, wire_store: DataStore
) -> None:
    wire.aggregate_batches = [[{"_id": "search"}], [{"_id": "indexer"}], [{"_id": "alpha"}]]
    assert admin.agents(wire_store, "user-1") == ["alpha", "indexer", "search"]
    commands = wire.take()
    assert names(commands) == ["aggregate", "getMore", "getMore"]
    aggregate, get_more, _ = commands
    assert aggregate["pipeline"] == [
        {"$match": {"userId": "user-1"}},
        {"$sort": {"userId": 1, "agentName": 1}},
        {"$group": {"_id": "$agentName"}},
    ]
    assert_reads_a_cursor(aggregate, get_more)


def test_the_listing_pipeline_follows_the_index_prefix_only() -> None:
    assert ops.first_of_each_pipeline({"userId": "u", "agentName": "a"}) == [
        {"$match": {"userId": "u", "agentName": "a"}},
        {"$sort": {"userId": 1, "agentName": 1, "namespace": 1}},
        {"$group": {"_id": "$namespace"}},
    ]
    # equalities that skip a field of the index, or leave no field to group on, would not be
    # a DISTINCT_SCAN: refused
    for scope_filter in [{"agentName": "a"}, {**AGENT, "namespace": "n"}]:
        with pytest.raises(ValueError, match="prefix"):
            ops.first_of_each_pipeline(scope_filter)


# ----------------------------------------------------------------------- list_namespaces


def test_list_namespaces_collects_every_batch_of_its_cursor(wire: WireServer) -> None:
    def replies() -> None:
        wire.aggregate_batches = [
            [{"_id": "c", "expiresAt": FUTURE}, {"_id": "a"}],
            [{"_id": "b", "expiresAt": None}],
        ]

    (sync_names, sync_commands), (async_names, async_commands) = run_on_both(
        wire, lambda p: p.list_namespaces(), lambda p: p.list_namespaces(), replies
    )
    assert sync_names == async_names == ["a", "b", "c"]
    assert names(async_commands) == ["aggregate", "getMore"]
    aggregate, get_more = async_commands
    assert aggregate["pipeline"] == NAMESPACES_PIPELINE
    assert_reads_a_cursor(aggregate, get_more)
    same_commands(sync_commands, async_commands)


def assert_settling_find(command: dict[str, Any], uncertain: list[str]) -> None:
    """The follow-up ``find``: the live condition of every read, on the uncertain namespaces
    only, in index order, the first match only."""
    assert without_expiry(command["filter"]) == {**AGENT, "namespace": {"$in": uncertain}}
    assert command["projection"] == {"namespace": 1, "_id": 0}
    assert command["sort"] == INDEX_ORDER
    assert command["limit"] == 1
    assert command["collation"] == SIMPLE


def test_expired_first_items_are_settled_with_one_find_per_live_namespace_found(
    wire: WireServer,
) -> None:
    def replies() -> None:
        wire.aggregate_batches = [
            [
                {"_id": "d", "expiresAt": PAST},  # an expired first item: uncertain
                {"_id": "c"},
                {"_id": "a", "expiresAt": PAST},
                {"_id": "b", "expiresAt": [FUTURE, PAST]},  # by hand: the server decides
                {"_id": "e", "expiresAt": FUTURE},
            ]
        ]
        # "a" holds nothing live: the first live item among a, b, d is in "b"; after it,
        # "d" holds nothing live either
        wire.find_batches.extend([[{"namespace": "b"}], []])

    (sync_names, sync_commands), (async_names, async_commands) = run_on_both(
        wire, lambda p: p.list_namespaces(), lambda p: p.list_namespaces(), replies
    )
    assert sync_names == async_names == ["b", "c", "e"]
    assert names(async_commands) == ["aggregate", "find", "find"]
    aggregate, first, second = async_commands
    assert aggregate["pipeline"] == NAMESPACES_PIPELINE
    assert_settling_find(first, ["a", "b", "d"])
    assert_settling_find(second, ["d"])
    same_commands(sync_commands, async_commands)


def test_no_further_find_once_the_last_uncertain_namespace_is_found_live(
    wire: WireServer,
) -> None:
    def replies() -> None:
        wire.aggregate_batches = [[{"_id": "x", "expiresAt": PAST}, {"_id": "y"}]]
        wire.find_batches.append([{"namespace": "x"}])

    (sync_names, sync_commands), (async_names, async_commands) = run_on_both(
        wire, lambda p: p.list_namespaces(), lambda p: p.list_namespaces(), replies
    )
    assert sync_names == async_names == ["x", "y"]
    assert names(async_commands) == ["aggregate", "find"]
    assert_settling_find(async_commands[1], ["x"])
    same_commands(sync_commands, async_commands)


def test_many_uncertain_namespaces_are_asked_about_a_thousand_at_a_time(
    wire: WireServer,
) -> None:
    uncertain = [f"ns-{i:04d}" for i in range(1_500)]

    def replies() -> None:
        wire.aggregate_batches = [[{"_id": name, "expiresAt": PAST} for name in uncertain]]
        wire.find_batches.extend([[{"namespace": "ns-0998"}], [], [{"namespace": "ns-1499"}]])

    (sync_names, sync_commands), (async_names, async_commands) = run_on_both(
        wire, lambda p: p.list_namespaces(), lambda p: p.list_namespaces(), replies
    )
    assert sync_names == async_names == ["ns-0998", "ns-1499"]
    assert names(async_commands) == ["aggregate", "find", "find", "find"]
    _, first, second, third = async_commands
    assert_settling_find(first, uncertain[:1_000])
    assert_settling_find(second, ["ns-0999"])
    assert_settling_find(third, uncertain[1_000:])
    same_commands(sync_commands, async_commands)


# ------------------------------------------------------------------ behaviour, every backend


def test_a_namespace_is_listed_while_any_of_its_items_is_live(
    data_store: AgentDataStoreProxy, clock: MovableClock
) -> None:
    clock.freeze()  # the embedded fake never deletes an item by itself: the store decides
    mixed = data_store.use_namespace("mixed")
    mixed.set("a-first", 1, ttl=60)  # first by key, expires
    mixed.set("b-later", 2)  # never expires
    gone = data_store.use_namespace("gone")
    gone.set_many({"a": 1, "b": 2}, ttl=60)
    late = data_store.use_namespace("late")
    late.set("a", 1, ttl=60)
    late.set("z", 1, ttl=600)  # outlives the others
    data_store.set("plain", 1)
    assert data_store.list_namespaces() == ["default", "gone", "late", "mixed"]
    clock.advance(61)
    assert data_store.list_namespaces() == ["default", "late", "mixed"]
    clock.advance(600)
    assert data_store.list_namespaces() == ["default", "mixed"]
    assert mixed.list_keys() == ["b-later"]


def test_the_admin_listings_include_every_user_and_agent_in_order() -> None:
    with agent_datastore.connect("mongomock://") as store:
        for user, agent in [("u2", "b"), ("u1", "c"), ("u1", "a"), ("U0", "x")]:
            store.proxy(user, agent).set("k", 1)
            store.proxy(user, agent, "other").set("k", 1)
        assert admin.users(store) == ["U0", "u1", "u2"]
        assert admin.agents(store, "u1") == ["a", "c"]
        assert admin.agents(store, "nobody") == []


# ------------------------------------------------------------------------ on a real server


def plan_values(explained: Any, name: str) -> list[Any]:
    """Every value of the field ``name`` anywhere in an ``explain`` answer, whatever its
    layout (``$cursor`` stages, a top-level queryPlanner, shards)."""
    if isinstance(explained, dict):
        found = [explained[name]] if name in explained else []
        return found + [v for value in explained.values() for v in plan_values(value, name)]
    if isinstance(explained, list):
        return [v for value in explained for v in plan_values(value, name)]
    return []


@pytest.mark.skipif(not MONGODB_URI, reason=REAL_SERVER_SKIP)
def test_a_real_server_runs_the_listings_as_distinct_scans() -> None:
    """docs/schema.md, "Listings": one index seek per value, and for list_namespaces one
    document read per namespace, however many items."""
    name = f"listings_{uuid.uuid4().hex}"
    with agent_datastore.connect(
        MONGODB_URI, database="agent_datastore_tests", collection=name
    ) as store:
        try:
            for namespace in ("a", "b", "c"):
                proxy = store.proxy("user-1", "agent-a", namespace)
                proxy.set_many({f"key-{i:03d}": i for i in range(200)})
            store.proxy("user-2", "agent-b").set("k", 1)
            assert store.proxy("user-1", "agent-a").list_namespaces() == ["a", "b", "c"]

            def explain(pipeline: list[dict[str, Any]]) -> Any:
                command = {"aggregate": name, "pipeline": pipeline, "cursor": {}}
                return store.collection.database.command(
                    "explain", {**command, "collation": SIMPLE}, verbosity="executionStats"
                )

            namespaces_plan = explain(ops.first_of_each_pipeline(AGENT, ("expiresAt",)))
            assert "DISTINCT_SCAN" in plan_values(namespaces_plan, "stage")
            examined = plan_values(namespaces_plan, "totalDocsExamined")
            assert examined
            assert max(examined) <= 3  # one per namespace, not 600
            users_plan = explain(ops.first_of_each_pipeline({}))
            assert "DISTINCT_SCAN" in plan_values(users_plan, "stage")
            assert max(plan_values(users_plan, "totalDocsExamined"), default=0) == 0  # covered
        finally:
            store.collection.drop()
