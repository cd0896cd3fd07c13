"""The differential test of ``DataStoreStore``: random sequences of LangGraph operations (put,
get, delete, search with filters, limit and offset, list_namespaces with conditions and depth,
and mixed batches of them) run against it and against LangGraph's own ``InMemoryStore``, whose
answers must agree, timestamps aside; with users from label 0 of each namespace, or with one
user fixed (then also searches and listings of the whole agent).

The deliberate differences (docs/integrations.md, "What differs from InMemoryStore") are kept
out by name, each where the test does so:

- ``search order``: InMemoryStore returns items in the order their namespaces were first
  touched; ours in index order, by namespace string then key. InMemoryStore's answer is
  sorted so (every match, then the page sliced) before comparing.
- ``empty namespaces``: InMemoryStore lists namespaces emptied by deletes or touched by a
  get; ours only those holding an item. Its empty namespaces are dropped before each listing,
  and listings run first in a mixed batch (a get earlier in the batch would make one).
- ``bool vs number``: no field compared with a number ever holds a bool (``t`` holds bools
  and is compared with bools only).
- ``range over non-numbers``: range operators are applied to ``n``, always a number; an op
  on which InMemoryStore raises would be skipped on both stores.
- ``tagged values``: values hold no key with ``$`` or ``.``, no integer beyond int64.
- ``empty, long or odd keys and labels``, ``non-JSON values``: keys, labels and values are
  drawn from what both accept (their refusals are tested in test_integration_langgraph.py).
- ``timestamps``: items are compared as (namespace, key, value).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule
from langgraph.store.base import (
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore

import agent_datastore
from agent_datastore.integrations.langgraph import DataStoreStore

from .helpers import MONGODB_URI, REAL_SERVER_SKIP

USERS = ("u1", "u2")
LABELS = ("a", "b", "a-b", "c")
KEYS = ("k1", "k2", "k3")
ALL = 10**6

numbers = st.integers(-3, 3) | st.sampled_from([0.5, 1.5, -2.5])
strings = st.sampled_from(["a", "b", "$x", "a.b", None])
small_lists = st.lists(st.integers(0, 2), max_size=2)
values = st.fixed_dictionaries(
    {"n": numbers},
    optional={
        "s": strings,
        "t": st.booleans(),
        "l": small_lists,
        "d": st.fixed_dictionaries({"n": st.integers(0, 2)}, optional={"s": strings}),
    },
)
# few namespaces and keys, so that sequences revisit them: "a-b" sorts between "a" and "a.b"
# as a string, after them as a tuple
namespaces = st.sampled_from(
    [("u1",), ("u1", "a"), ("u1", "a", "b"), ("u1", "a-b"), ("u1", "b"), ("u2", "a")]
)
prefixes = st.sampled_from([("u1",), ("u1", "a"), ("u1", "a", "b"), ("u1", "c"), ("u2",)])
keys = st.sampled_from(KEYS)

ranges = st.sampled_from(["$gt", "$gte", "$lt", "$lte"])
conditions = st.one_of(
    st.tuples(st.just("n"), numbers),
    st.tuples(st.just("n"), st.dictionaries(ranges, numbers, min_size=1, max_size=2)),
    st.tuples(st.just("n"), st.builds(lambda v: {"$ne": v}, numbers)),
    st.tuples(st.just("n"), st.builds(lambda v: {"$eq": v}, numbers)),
    st.tuples(st.just("s"), strings),
    st.tuples(st.just("s"), st.builds(lambda v: {"$ne": v}, strings)),
    st.tuples(st.just("t"), st.booleans()),
    st.tuples(st.just("l"), small_lists),
    st.tuples(st.just("d"), st.fixed_dictionaries({}, optional={"n": st.integers(0, 2)})),
    st.tuples(st.just("d"), st.builds(lambda v: {"n": {"$gte": v}}, st.integers(0, 2))),
)
filters = (
    st.none() | conditions.map(lambda c: dict([c])) | st.lists(conditions, max_size=2).map(dict)
)

# built by lambdas: st.builds on the op classes would also draw their optional fields
# (a query, a ttl), which the test sets apart
search_ops = st.builds(
    lambda prefix, filter, limit, offset: SearchOp(prefix, filter, limit, offset),
    prefixes,
    filters,
    st.sampled_from([1, 2, 5, 10]),
    st.sampled_from([0, 1, 3]),
)
prefix_rests = st.sampled_from([(), ("a",), ("*",), ("a", "b"), ("*", "b"), ("c",)])
suffixes = st.sampled_from([(), ("a",), ("b",), ("*",), ("a", "*"), ("a-b",)])
listing_ops = st.builds(
    lambda user, prefix, suffix, max_depth, limit, offset: ListNamespacesOp(
        (
            MatchCondition("prefix", (user, *prefix)),
            *((MatchCondition("suffix", tuple(suffix)),) if suffix else ()),
        ),
        max_depth,
        limit,
        offset,
    ),
    st.sampled_from(USERS),
    prefix_rests,
    suffixes,
    st.sampled_from([None, 1, 2, 3]),
    st.sampled_from([1, 2, 100]),
    st.sampled_from([0, 1]),
)
# a value of None deletes
write_ops = st.builds(
    lambda ns, key, value: PutOp(ns, key, value), namespaces, keys, st.none() | values
)
read_ops = st.builds(lambda ns, key: GetOp(ns, key), namespaces, keys) | search_ops | listing_ops
batches = st.lists(write_ops | read_ops, min_size=1, max_size=6)


def comparable(result: Result) -> Any:
    """A result without timestamps: items as (namespace, key, value)."""
    if isinstance(result, Item):
        return (result.namespace, result.key, result.value)
    if isinstance(result, list):
        return [comparable(entry) for entry in result]
    return result


def drop_empty_namespaces(memory: InMemoryStore) -> None:
    for namespace in [namespace for namespace, items in memory._data.items() if not items]:
        del memory._data[namespace]


def in_search_order(memory_answer: list[Any], op: SearchOp) -> list[Any]:
    ordered = sorted(memory_answer, key=lambda item: (".".join(item.namespace), item.key))
    return ordered[op.offset : op.offset + op.limit]


def for_memory(op: Op) -> Op:
    """What InMemoryStore is asked for ``op``: every match of a search, to be put in search
    order and paged here."""
    if isinstance(op, SearchOp):
        return op._replace(limit=ALL, offset=0)
    return op


class AgainstInMemoryStore(RuleBasedStateMachine):
    """Each rule runs one batch on both stores and compares the answers."""

    def __init__(self) -> None:
        super().__init__()
        self.memory = InMemoryStore()
        self.backend = open_backend()
        self.ours = DataStoreStore(self.backend, agent_name="assistant", user_label=0)
        self.fixed_user = False

    @initialize(fixed_user=st.booleans())
    def whose(self, fixed_user: bool) -> None:
        """Users from label 0, or one user for every namespace: then the whole agent can be
        searched and listed."""
        if fixed_user:
            self.ours = DataStoreStore(self.backend, agent_name="assistant", user_id="u0")
            self.fixed_user = True

    def teardown(self) -> None:
        close_backend(self.backend)

    def run(self, ops: Sequence[Op]) -> None:
        # listings first: a get earlier in a batch gives InMemoryStore an empty namespace
        ops = sorted(ops, key=lambda op: not isinstance(op, ListNamespacesOp))
        drop_empty_namespaces(self.memory)
        try:
            expected = self.memory.batch([for_memory(op) for op in ops])
        except (TypeError, ValueError):  # InMemoryStore's own refusals: not compared
            return
        for index, op in enumerate(ops):
            if isinstance(op, SearchOp):
                expected[index] = in_search_order(expected[index], op)  # type: ignore[arg-type]
        answer = self.ours.batch(ops)
        assert comparable(answer) == comparable(expected), ops

    @rule(namespace=namespaces, key=keys, value=values)
    def put(self, namespace: tuple[str, ...], key: str, value: dict[str, Any]) -> None:
        self.run([PutOp(namespace, key, value)])

    @rule(items=st.lists(st.tuples(namespaces, keys, values), min_size=1, max_size=8))
    def put_many(self, items: list[tuple[tuple[str, ...], str, dict[str, Any]]]) -> None:
        self.run([PutOp(namespace, key, value) for namespace, key, value in items])

    @rule(namespace=namespaces, key=keys)
    def delete(self, namespace: tuple[str, ...], key: str) -> None:
        self.run([PutOp(namespace, key, None)])

    @rule(namespace=namespaces, key=keys)
    def get(self, namespace: tuple[str, ...], key: str) -> None:
        self.run([GetOp(namespace, key)])

    @rule(op=search_ops)
    def search(self, op: SearchOp) -> None:
        self.run([op])

    @rule(op=listing_ops)
    def list_namespaces(self, op: ListNamespacesOp) -> None:
        self.run([op])

    @precondition(lambda self: self.fixed_user)
    @rule(op=search_ops, depth=st.sampled_from([None, 1, 2]))
    def across_the_agent(self, op: SearchOp, depth: int | None) -> None:
        """A search of every namespace, and a listing without conditions."""
        self.run([op._replace(namespace_prefix=()), ListNamespacesOp(None, depth, 100, 0)])

    @rule(ops=batches)
    def batch(self, ops: list[Op]) -> None:
        self.run(ops)


def open_backend() -> Any:
    if AgainstInMemoryStore.uri is None:
        return agent_datastore.connect("mongomock://")
    return agent_datastore.connect(
        AgainstInMemoryStore.uri,
        database="agent_datastore_tests",
        collection=f"langgraph_{uuid.uuid4().hex}",
    )


def close_backend(backend: Any) -> None:
    if AgainstInMemoryStore.uri is not None:
        backend.collection.drop()
    backend.close()


AgainstInMemoryStore.uri = None  # type: ignore[attr-defined]
RUNS = settings(
    max_examples=150,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_datastorestore_answers_as_in_memory_store_on_the_embedded_store() -> None:
    AgainstInMemoryStore.TestCase.settings = RUNS
    AgainstInMemoryStore.TestCase().runTest()


def test_datastorestore_answers_as_in_memory_store_on_a_real_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not MONGODB_URI:
        pytest.skip(REAL_SERVER_SKIP)
    monkeypatch.setattr(AgainstInMemoryStore, "uri", MONGODB_URI, raising=False)
    AgainstInMemoryStore.TestCase.settings = settings(RUNS, max_examples=20)
    AgainstInMemoryStore.TestCase().runTest()


def test_search_order_is_the_one_difference_in_order() -> None:
    """What "search order" stands for: the same items, in another order."""
    memory = InMemoryStore()
    with agent_datastore.connect("mongomock://") as backend:
        ours = DataStoreStore(backend, agent_name="assistant", user_label=0)
        for store in (memory, ours):
            store.put(("u1", "b"), "k", {"n": 1})
            store.put(("u1", "a"), "k", {"n": 1})
        memory_order = [item.namespace for item in memory.search(("u1",))]
        our_order = [item.namespace for item in ours.search(("u1",))]
    assert memory_order == [("u1", "b"), ("u1", "a")]  # as first written
    assert our_order == [("u1", "a"), ("u1", "b")]  # by namespace string
