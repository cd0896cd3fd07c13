"""``DataStoreStore``, the LangGraph store: its contract on every backend of the ``store``
fixture, the commands each batch sends, a graph that uses it end to end, and its refusals.
The differential test against LangGraph's own ``InMemoryStore`` is in
``test_integration_langgraph_differential.py``."""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, TypedDict

import pytest
from click.testing import CliRunner
from langgraph.config import get_store
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchOp,
)

import agent_datastore
from agent_datastore import (
    AsyncDataStore,
    AsyncRemoteDataStoreProxy,
    DataStore,
    RemoteDataStoreProxy,
)
from agent_datastore._filters import value_query
from agent_datastore.cli import cli
from agent_datastore.integrations.langgraph import TTL_FIELD, DataStoreStore

from .conftest import local_store
from .helpers import MovableClock
from .service import RemoteStore, ServiceThread, remote_store
from .test_integration_langchain import CountingExecutor
from .test_wire_commands import SIMPLE, without_expiry
from .twins import LoopThread, SyncOverAsyncProxy, SyncOverAsyncStore
from .wire import WireServer, start_wire_server

AGENT = "assistant"


class SyncOverAsync(BaseStore):
    """A ``DataStoreStore`` over an asynchronous store, behind the synchronous methods: each
    batch is its ``abatch``, run on the loop thread of the async store's test facade."""

    supports_ttl = True

    def __init__(self, inner: DataStoreStore, runner: LoopThread) -> None:
        self.inner = inner
        self.ttl_config = inner.ttl_config
        self._runner = runner

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return self._runner.run(self.inner.abatch(list(ops)))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        raise AssertionError("the tests call the synchronous methods")


@pytest.fixture(params=["embedded", "embedded-async", "mongodb", "mongodb-async"])
def store(request: pytest.FixtureRequest, clock: MovableClock) -> Iterator[Any]:
    """The local backends of conftest's ``store``: a remote proxy's token is one user's, so
    the tests of several users run here, and the remote path has tests of its own below."""
    yield from local_store(request.param, clock)


def langgraph_store(store: Any, **options: Any) -> BaseStore:
    """A ``DataStoreStore`` of agent ``AGENT`` over a store or a remote proxy of a test's
    backend, behind the synchronous methods."""
    options.setdefault("agent_name", AGENT)
    if isinstance(store, (DataStore, RemoteDataStoreProxy)):
        return DataStoreStore(store, **options)
    if isinstance(store, SyncOverAsyncStore):
        return SyncOverAsync(DataStoreStore(store.async_store, **options), store._runner)
    assert isinstance(store, SyncOverAsyncProxy)
    return SyncOverAsync(DataStoreStore(store._proxy, **options), store._runner)  # type: ignore[arg-type]


@pytest.fixture
def lg(store: Any) -> BaseStore:
    """Users are the first label of each namespace, LangGraph's common shape."""
    return langgraph_store(store, user_label=0)


def stored(store: Any, **query: Any) -> list[dict[str, Any]]:
    """The documents of the store, less ids and values, sorted by namespace and key."""
    return list(
        store.collection.find(query, {"_id": 0, "value": 0}).sort([("namespace", 1), ("key", 1)])
    )


# ------------------------------------------------------------ the contract


def test_an_item_comes_back_as_langgraphs_item(lg: BaseStore, clock: MovableClock) -> None:
    before = clock().replace(microsecond=0)
    lg.put(("u1", "memories"), "m1", {"text": "likes tea", "n": 2**70, "t": (1, 2)})
    item = lg.get(("u1", "memories"), "m1")
    assert item is not None
    assert item.namespace == ("u1", "memories")
    assert item.key == "m1"
    assert item.value == {"text": "likes tea", "n": 2**70, "t": [1, 2]}  # JSON: lists
    assert item.created_at == item.updated_at
    assert item.created_at.tzinfo is not None
    assert item.created_at >= before
    assert lg.get(("u1", "memories"), "missing") is None
    assert lg.get(("u1", "other"), "m1") is None


def test_each_namespace_is_the_labels_joined_under_the_user_its_label_names(
    store: Any, lg: BaseStore
) -> None:
    lg.put(("u1", "memories"), "a", {"x": 1})
    lg.put(("u2", "memories", "work"), "b", {"x": 2})
    lg.put(("u1",), "c", {"x": 3})
    assert [(d["userId"], d["agentName"], d["namespace"], d["key"]) for d in stored(store)] == [
        ("u1", AGENT, "u1", "c"),
        ("u1", AGENT, "u1.memories", "a"),
        ("u2", AGENT, "u2.memories.work", "b"),
    ]
    assert all(d["metadata"] == {TTL_FIELD: None} for d in stored(store))
    assert "expiresAt" not in stored(store)[0]
    # the same items, read by the package's own proxy
    assert store.proxy("u1", AGENT, "u1.memories").get("a") == {"x": 1}


def test_a_fixed_user_holds_every_namespace(store: Any) -> None:
    lg = langgraph_store(store, user_id="u9")
    lg.put(("memories",), "a", {"x": 1})
    lg.put(("memories", "deep"), "b", {"x": 2})
    assert [(d["userId"], d["namespace"]) for d in stored(store)] == [
        ("u9", "memories"),
        ("u9", "memories.deep"),
    ]
    # with the user fixed, the whole agent may be searched and listed
    assert [item.key for item in lg.search(())] == ["a", "b"]
    assert lg.list_namespaces() == [("memories",), ("memories", "deep")]


def test_search_reaches_the_prefix_and_what_is_below_it_on_label_boundaries(
    lg: BaseStore,
) -> None:
    for namespace in [("u1", "a"), ("u1", "a", "x"), ("u1", "ab"), ("u1", "a-b"), ("u2", "a")]:
        lg.put(namespace, "k", {"ns": list(namespace)})
    assert [item.namespace for item in lg.search(("u1", "a"))] == [("u1", "a"), ("u1", "a", "x")]
    # every namespace of the user, in the index order of the namespace strings
    assert [item.namespace for item in lg.search(("u1",))] == [
        ("u1", "a"),
        ("u1", "a-b"),  # "-" sorts before ".": the string order, not the tuples'
        ("u1", "a", "x"),
        ("u1", "ab"),
    ]
    assert lg.search(("u1", "a", "x", "y")) == []
    assert lg.search(("u3",)) == []


def test_search_pages_with_limit_and_offset_in_namespace_then_key_order(lg: BaseStore) -> None:
    for key in ["c", "a", "b"]:
        lg.put(("u1", "n2"), key, {"k": key})
        lg.put(("u1", "n1"), key, {"k": key})
    everything = [(item.namespace[1], item.key) for item in lg.search(("u1",), limit=100)]
    assert everything == [(n, k) for n in ("n1", "n2") for k in ("a", "b", "c")]
    page = lg.search(("u1",), limit=2, offset=3)
    assert [(item.namespace[1], item.key) for item in page] == everything[3:5]
    assert all(item.score is None for item in page)
    assert len(lg.search(("u1",))) == 6  # LangGraph's default limit is 10
    assert lg.search(("u1",), limit=0) == []
    assert lg.search(("u1",), offset=10) == []


def test_delete_removes_the_item_and_its_namespace_from_the_listing(lg: BaseStore) -> None:
    lg.put(("u1", "a"), "k", {"x": 1})
    lg.put(("u1", "b"), "k", {"x": 1})
    lg.delete(("u1", "a"), "k")
    lg.delete(("u1", "a"), "never there")
    assert lg.get(("u1", "a"), "k") is None
    assert lg.list_namespaces(prefix=("u1",)) == [("u1", "b")]


def test_list_namespaces_with_prefix_suffix_wildcards_depth_and_paging(lg: BaseStore) -> None:
    namespaces = [
        ("u1", "a", "b", "c"),
        ("u1", "a", "b", "d", "e"),
        ("u1", "a", "b", "d", "i"),
        ("u1", "a", "b", "f"),
        ("u1", "a", "c", "f"),
        ("u2", "a", "b", "c"),
    ]
    for namespace in namespaces:
        lg.put(namespace, "k", {"x": 1})
    mine = sorted(namespaces[:5])
    assert lg.list_namespaces(prefix=("u1",)) == mine
    assert lg.list_namespaces(prefix=("u1", "a", "b"), max_depth=4) == [
        ("u1", "a", "b", "c"),
        ("u1", "a", "b", "d"),
        ("u1", "a", "b", "f"),
    ]
    assert lg.list_namespaces(prefix=("u1", "*", "c")) == [("u1", "a", "c", "f")]
    assert lg.list_namespaces(prefix=("u1",), suffix=("f",)) == [
        ("u1", "a", "b", "f"),
        ("u1", "a", "c", "f"),
    ]
    assert lg.list_namespaces(prefix=("u1",), suffix=("d", "*")) == mine[1:3]
    assert lg.list_namespaces(prefix=("u1",), limit=2, offset=1) == mine[1:3]
    assert lg.list_namespaces(prefix=("u1",), max_depth=1) == [("u1",)]
    assert lg.list_namespaces(prefix=("u2",), suffix=("c",)) == [("u2", "a", "b", "c")]
    assert lg.list_namespaces(prefix=("u1",), limit=0) == []


def test_a_batch_reads_before_it_writes_and_the_last_put_of_a_key_wins(lg: BaseStore) -> None:
    lg.put(("u1", "n"), "a", {"v": 0})
    results = lg.batch(
        [
            PutOp(("u1", "n"), "a", {"v": 1}),
            GetOp(("u1", "n"), "a"),
            PutOp(("u1", "n"), "b", {"v": 1}),
            PutOp(("u1", "n"), "a", {"v": 2}),
            SearchOp(("u1",)),
            PutOp(("u1", "n"), "b", None),
            ListNamespacesOp((MatchCondition("prefix", ("u1",)),)),
            GetOp(("u2", "n"), "a"),
        ]
    )
    assert [results[0], results[2], results[5]] == [None, None, None]
    got = results[1]
    assert got is not None
    assert got.value == {"v": 0}  # as it was before the batch
    searched = results[4]
    assert isinstance(searched, list)
    assert [item.value for item in searched] == [{"v": 0}]
    assert results[6] == [("u1", "n")]
    assert results[7] is None
    after = lg.get(("u1", "n"), "a")
    assert after is not None
    assert after.value == {"v": 2}
    assert lg.get(("u1", "n"), "b") is None


def test_every_op_is_checked_before_anything_is_written(store: Any, lg: BaseStore) -> None:
    bad_batches: list[tuple[list[Op], type[Exception], str]] = [
        ([PutOp(("u1", "n"), "ok", {"x": 1}), PutOp(("u1", "n"), "set", {"x": {1, 2}})],
         TypeError, "not storable JSON"),
        ([PutOp(("u1", "n"), "ok", {"x": 1}), PutOp(("u1", "n"), "nan", {"x": float("nan")})],
         TypeError, "not storable JSON"),
        ([PutOp(("u1", "n"), "ok", {"x": 1}), PutOp(("u1", "n"), "", {"x": 1})],
         ValueError, "key must not be empty"),
        ([PutOp(("u1", "n"), "ok", {"x": 1}), PutOp(("u1", "n"), "k" * 1025, {"x": 1})],
         ValueError, "over the limit of 1024"),
        ([PutOp(("u1", "n"), "ok", {"x": 1}), PutOp(("u1", "a.b"), "k", {"x": 1})],
         InvalidNamespaceError, "periods"),
        ([PutOp(("u1", "n"), "ok", {"x": 1}), PutOp(("u1", "x" * 600), "k", {"x": 1})],
         InvalidNamespaceError, "over the limit of 512"),
        ([PutOp(("u1", "n"), "ok", {"x": 1}), PutOp(("langgraph", "n"), "k", {"x": 1})],
         InvalidNamespaceError, "langgraph"),
        ([PutOp(("u1", "n"), "ok", {"x": 1}), PutOp((), "k", {"x": 1})],
         InvalidNamespaceError, "empty"),
        ([PutOp(("u1", "n"), "ok", {"x": 1}), PutOp(("u1", "n"), "v", [1])],  # type: ignore[arg-type]
         TypeError, "value must be a dict"),
        ([PutOp(("u1", "n"), "ok", {"x": 1}), PutOp(("u1", "n"), "t", {"x": 1}, ttl=-1)],
         ValueError, "ttl must be positive"),
        ([PutOp(("u1", "n"), "ok", {"x": 1}), SearchOp(("u1",), limit=-1)],
         ValueError, "limit must be 0 or more"),
        ([PutOp(("u1", "n"), "ok", {"x": 1}), SearchOp(("u1",), offset=-1)],
         ValueError, "offset must be 0 or more"),
        ([PutOp(("u1", "n"), "ok", {"x": 1}), SearchOp(("u1",), query="tea")],
         NotImplementedError, "semantic search"),
        ([PutOp(("u1", "n"), "ok", {"x": 1}), ListNamespacesOp(limit=5)],
         ValueError, "does not fix the user label"),
        ([PutOp(("u1", "n"), "ok", {"x": 1}), "get"],  # type: ignore[list-item]
         ValueError, "Unknown operation type"),
    ]  # fmt: skip
    for ops, error, message in bad_batches:
        with pytest.raises(error, match=message):
            lg.batch(ops)
    assert stored(store) == []


def test_a_search_or_listing_that_does_not_fix_the_user_is_refused(lg: BaseStore) -> None:
    lg.put(("u1", "n"), "k", {"x": 1})
    calls = [
        lambda: lg.search(()),
        lambda: lg.list_namespaces(),
        lambda: lg.list_namespaces(prefix=("*", "n")),
        lambda: lg.list_namespaces(suffix=("n",)),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"does not fix the user label \(label 0"):
            call()
    with pytest.raises(InvalidNamespaceError, match="has no label 1"):
        another_store(lg, user_label=1).get(("u1",), "k")


def another_store(lg: BaseStore, **options: Any) -> BaseStore:
    """Another ``DataStoreStore`` over the same store as ``lg``."""
    inner = lg.inner if isinstance(lg, SyncOverAsync) else lg
    assert isinstance(inner, DataStoreStore)
    options.setdefault("agent_name", AGENT)
    other = DataStoreStore(inner.store, **options)
    return other if inner is lg else SyncOverAsync(other, lg._runner)  # type: ignore[attr-defined]


def test_semantic_search_is_refused_rather_than_answered_unranked(store: Any) -> None:
    index = {"dims": 3, "embed": lambda texts: [[0.0, 0.0, 1.0] for _ in texts]}
    backend = store.async_store if isinstance(store, SyncOverAsyncStore) else store
    with pytest.raises(NotImplementedError, match="does not support semantic search"):
        DataStoreStore(backend, agent_name=AGENT, user_id="u1", index=index)  # type: ignore[arg-type]
    lg = langgraph_store(store, user_id="u1")
    with pytest.raises(NotImplementedError, match="does not support semantic search"):
        lg.search(("memories",), query="what does the user like?")
    lg.put(("memories",), "k", {"x": 1}, index=["x"])  # a put's index is ignored, as documented
    assert [item.key for item in lg.search(("memories",), query="")] == ["k"]


def test_the_stores_limits_are_refused_as_langgraph_errors(lg: BaseStore) -> None:
    with pytest.raises(InvalidNamespaceError, match="lone surrogate"):
        lg.get(("u1", "\ud800"), "k")
    with pytest.raises(ValueError, match="lone surrogate"):
        lg.get(("u1", "n"), "\ud800")
    with pytest.raises(InvalidNamespaceError, match="over the limit of 512"):
        lg.search(("u1", "é" * 300))
    with pytest.raises(InvalidNamespaceError, match="over the limit of 512"):
        lg.put(("u" * 513,), "k", {"x": 1})  # the user label, as long as its namespace
    with pytest.raises(ValueError, match="key must not be empty"):
        lg.get(("u1", "n"), "")


# ------------------------------------------------------------ TTL


def test_ttl_in_minutes_and_its_refresh_on_get_and_search(store: Any, clock: MovableClock) -> None:
    lg = langgraph_store(store, user_label=0)
    lg.put(("u1", "n"), "k", {"x": 1}, ttl=1)  # one minute
    lg.put(("u1", "n"), "forever", {"x": 2})
    (document,) = stored(store, key="k")
    assert document["metadata"] == {TTL_FIELD: 60_000}
    first_expiry = document["expiresAt"]
    clock.advance(50)
    assert lg.get(("u1", "n"), "k") is not None  # and restarts the minute
    (refreshed,) = stored(store, key="k")
    assert refreshed["expiresAt"] - first_expiry >= timedelta(seconds=50)
    # the timer moves; the item is not written
    assert (refreshed["updatedAt"], refreshed["version"]) == (
        document["updatedAt"],
        document["version"],
    )
    clock.advance(50)
    assert [item.key for item in lg.search(("u1",))] == ["forever", "k"]  # refreshed again
    clock.advance(50)
    assert lg.get(("u1", "n"), "k", refresh_ttl=False) is not None
    assert [item.key for item in lg.search(("u1",), refresh_ttl=False)] == ["forever", "k"]
    clock.advance(11)
    assert lg.get(("u1", "n"), "k") is None  # 61 s after the last refresh
    assert [item.key for item in lg.search(("u1",))] == ["forever"]
    assert lg.list_namespaces(prefix=("u1",)) == [("u1", "n")]
    assert stored(store, key="forever")[0].get("expiresAt") is None


def test_the_ttl_config_gives_the_default_ttl_and_the_refresh_default(
    store: Any, clock: MovableClock
) -> None:
    lg = langgraph_store(
        store,
        user_label=0,
        ttl={"default_ttl": 2, "refresh_on_read": False, "sweep_interval_minutes": 5},
    )
    assert lg.supports_ttl
    lg.put(("u1", "n"), "k", {"x": 1})
    lg.put(("u1", "n"), "none", {"x": 1}, ttl=None)  # an explicit None: no expiry
    assert {d["key"]: d["metadata"][TTL_FIELD] for d in stored(store)} == {
        "k": 120_000,
        "none": None,
    }
    clock.advance(100)
    assert lg.get(("u1", "n"), "k") is not None  # no refresh by default
    clock.advance(21)
    assert lg.get(("u1", "n"), "k", refresh_ttl=True) is None
    assert lg.get(("u1", "n"), "none") is not None


def test_a_put_without_ttl_makes_a_ttl_item_lasting(store: Any, clock: MovableClock) -> None:
    lg = langgraph_store(store, user_label=0)
    lg.put(("u1", "n"), "k", {"x": 1}, ttl=1)
    lg.put(("u1", "n"), "k", {"x": 2})
    (document,) = stored(store)
    assert document["metadata"] == {TTL_FIELD: None}
    assert document.get("expiresAt") is None
    clock.advance(3600)
    item = lg.get(("u1", "n"), "k")
    assert item is not None
    assert item.value == {"x": 2}


@pytest.mark.parametrize(
    "config",
    [{"default_ttl": 0}, {"default_ttl": "1"}, {"refresh_on_read": 1}, {"ttl": 1}, "1"],
)
def test_a_bad_ttl_config_is_refused(config: Any) -> None:
    with agent_datastore.connect("mongomock://") as store, pytest.raises((TypeError, ValueError)):
        DataStoreStore(store, agent_name=AGENT, user_id="u1", ttl=config)


# ------------------------------------------------------------ construction


def test_construction_checks_its_arguments() -> None:
    with agent_datastore.connect("mongomock://") as store:
        with pytest.raises(ValueError, match=r"give user_id .* or user_label"):
            DataStoreStore(store, agent_name=AGENT)
        with pytest.raises(ValueError, match="not both"):
            DataStoreStore(store, agent_name=AGENT, user_id="u1", user_label=0)
        with pytest.raises(TypeError, match="user_label must be an int"):
            DataStoreStore(store, agent_name=AGENT, user_label=True)
        with pytest.raises(ValueError, match="user_label must be 0 or more"):
            DataStoreStore(store, agent_name=AGENT, user_label=-1)
        with pytest.raises(ValueError, match="agent_name must not be empty"):
            DataStoreStore(store, agent_name="", user_id="u1")
        for wrong in (store.proxy("u1", AGENT), object()):
            with pytest.raises(TypeError, match="store must be a DataStore"):
                DataStoreStore(wrong, agent_name=AGENT, user_id="u1")  # type: ignore[arg-type]
        lg = DataStoreStore(store, agent_name=AGENT, user_label=0)
        assert (lg.store, lg.agent_name, lg.user_id, lg.user_label) == (store, AGENT, None, 0)
        assert repr(lg) == f"DataStoreStore({store!r}, agent_name='assistant', user_label=0)"
        assert isinstance(lg, BaseStore)


def test_without_langgraph_the_import_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "langgraph", None)
    monkeypatch.setitem(sys.modules, "langgraph.store", None)
    monkeypatch.setitem(sys.modules, "langgraph.store.base", None)
    monkeypatch.delitem(sys.modules, "agent_datastore.integrations.langgraph")
    with pytest.raises(ImportError, match=r"pip install 'agent-datastore\[langgraph\]'"):
        importlib.import_module("agent_datastore.integrations.langgraph")


def test_importing_the_package_loads_no_langgraph() -> None:
    script = (
        "import sys, agent_datastore\n"
        "print([m for m in sys.modules if m.startswith(('agent_datastore.integrations',"
        " 'langgraph'))])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------ sync and async


@pytest.mark.asyncio
async def test_over_an_async_store_the_a_methods_are_native_and_the_others_refuse() -> None:
    loop = asyncio.get_running_loop()
    executor = CountingExecutor()
    loop.set_default_executor(executor)
    async with agent_datastore.connect_async("mongomock://") as store:
        lg = DataStoreStore(store, agent_name=AGENT, user_label=0)
        await lg.aput(("u1", "n"), "k", {"x": 1})
        item = await lg.aget(("u1", "n"), "k")
        assert item is not None
        assert item.value == {"x": 1}
        assert [i.key for i in await lg.asearch(("u1",))] == ["k"]
        assert await lg.alist_namespaces(prefix=("u1",)) == [("u1", "n")]
        await lg.adelete(("u1", "n"), "k")
        assert await lg.aget(("u1", "n"), "k") is None
        with pytest.raises(TypeError, match="over an AsyncDataStore runs only asynchronously"):
            lg.get(("u1", "n"), "k")
        with pytest.raises(TypeError, match="abatch, aget, aput"):
            lg.put(("u1", "n"), "k", {"x": 1})
        assert await lg.aget(("u1", "n"), "k") is None
    assert executor.submitted == 0  # no thread besides the embedded fake's own


@pytest.mark.asyncio
async def test_over_a_sync_store_the_a_methods_run_the_batch_in_a_thread() -> None:
    loop = asyncio.get_running_loop()
    executor = CountingExecutor()
    loop.set_default_executor(executor)
    with agent_datastore.connect("mongomock://") as store:
        lg = DataStoreStore(store, agent_name=AGENT, user_id="u1")
        await lg.aput(("n",), "k", {"x": 1})
        item = await lg.aget(("n",), "k")
        assert item is not None
        assert item.value == {"x": 1}
    assert executor.submitted == 2


# ------------------------------------------------------------ a graph


class State(TypedDict, total=False):
    user: str
    note: str
    memories: list[str]


def remember(state: State, runtime: Runtime[None]) -> State:
    assert runtime.store is not None
    namespace = (state["user"], "memories")
    count = len(runtime.store.search(namespace, limit=100))
    runtime.store.put(namespace, f"note-{count}", {"text": state["note"]})
    return {}


def recall(state: State) -> State:
    # get_store() in a synchronous node under invoke; under ainvoke, Python 3.10 does not
    # carry LangGraph's context into the node (LangGraph documents it), so those use runtime
    found = get_store().search((state["user"], "memories"), limit=100)
    return {"memories": [item.value["text"] for item in found]}


def recall_from_runtime(state: State, runtime: Runtime[None]) -> State:
    assert runtime.store is not None
    found = runtime.store.search((state["user"], "memories"), limit=100)
    return {"memories": [item.value["text"] for item in found]}


async def aremember(state: State, runtime: Runtime[None]) -> State:
    assert runtime.store is not None
    namespace = (state["user"], "memories")
    count = len(await runtime.store.asearch(namespace, limit=100))
    await runtime.store.aput(namespace, f"note-{count}", {"text": state["note"]})
    return {}


async def arecall(state: State, runtime: Runtime[None]) -> State:
    assert runtime.store is not None
    found = await runtime.store.asearch((state["user"], "memories"), limit=100)
    return {"memories": [item.value["text"] for item in found]}


def memory_graph(remember: Any, recall: Any) -> StateGraph[State]:
    graph = StateGraph(State)
    graph.add_node("remember", remember)
    graph.add_node("recall", recall)
    graph.add_edge(START, "remember")
    graph.add_edge("remember", "recall")
    graph.add_edge("recall", END)
    return graph


def keys_shown(store: DataStore, user: str, namespace: str) -> Any:
    result = CliRunner().invoke(
        cli, ["keys", user, AGENT, "-n", namespace, "--json"], obj={"store": store}
    )
    assert result.exit_code == 0, (result.output, result.stderr)
    return json.loads(result.stdout)


def test_a_graph_writes_and_reads_memories_and_the_cli_shows_them_per_user() -> None:
    with agent_datastore.connect("mongomock://") as store:
        app = memory_graph(remember, recall).compile(
            store=DataStoreStore(store, agent_name=AGENT, user_label=0)
        )
        assert app.invoke({"user": "u1", "note": "likes tea"})["memories"] == ["likes tea"]
        answer = app.invoke({"user": "u1", "note": "works at night"})
        assert answer["memories"] == ["likes tea", "works at night"]
        assert app.invoke({"user": "u2", "note": "likes coffee"})["memories"] == ["likes coffee"]
        assert keys_shown(store, "u1", "u1.memories") == ["note-0", "note-1"]
        assert keys_shown(store, "u2", "u2.memories") == ["note-0"]
        assert keys_shown(store, "u2", "u1.memories") == []


@pytest.mark.asyncio
async def test_a_graph_runs_with_ainvoke_over_the_async_store() -> None:
    async with agent_datastore.connect_async("mongomock://") as store:
        app = memory_graph(aremember, arecall).compile(
            store=DataStoreStore(store, agent_name=AGENT, user_label=0)
        )
        await app.ainvoke({"user": "u1", "note": "likes tea"})
        answer = await app.ainvoke({"user": "u1", "note": "works at night"})
        assert answer["memories"] == ["likes tea", "works at night"]
        # the admin command reads the same collection through a synchronous store
        with DataStore(store.collection) as same:
            assert keys_shown(same, "u1", "u1.memories") == ["note-0", "note-1"]


@pytest.mark.asyncio
async def test_synchronous_nodes_under_ainvoke_are_served_on_the_store_s_loop() -> None:
    # LangGraph runs a synchronous node in a worker thread: its calls go to the store's loop
    async with agent_datastore.connect_async("mongomock://") as store:
        lg = DataStoreStore(store, agent_name=AGENT, user_label=0)
        app = memory_graph(remember, recall_from_runtime).compile(store=lg)
        await app.ainvoke({"user": "u1", "note": "likes tea"})
        answer = await app.ainvoke({"user": "u1", "note": "works at night"})
        assert answer["memories"] == ["likes tea", "works at night"]
        # on the loop's own thread, waiting for the loop would hang: refused
        with pytest.raises(TypeError, match="runs only asynchronously"):
            lg.search(("u1", "memories"))


def test_a_synchronous_call_with_no_loop_running_is_refused() -> None:
    async def build() -> DataStoreStore:
        store: AsyncDataStore = agent_datastore.connect_async("mongomock://")
        return DataStoreStore(store, agent_name=AGENT, user_label=0)

    lg = asyncio.run(build())  # its loop has stopped
    with pytest.raises(TypeError, match="runs only asynchronously"):
        lg.get(("u1", "n"), "k")


# ------------------------------------------------------------ over the wire


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServer]:
    yield from start_wire_server()


@pytest.fixture
def wire_lg(wire: WireServer) -> Iterator[DataStoreStore]:
    """A store of agent ``AGENT`` with users from label 0, indexes ensured, nothing recorded."""
    with wire.connect() as store:
        store.ensure_indexes()
        wire.take()
        yield DataStoreStore(store, agent_name=AGENT, user_label=0)
    wire.take()


def found(namespace: str, key: str, ttl_ms: int | None = None) -> dict[str, Any]:
    """A document as find_items reads it."""
    now = datetime.now(timezone.utc)
    document: dict[str, Any] = {
        "namespace": namespace,
        "key": key,
        "value": {"key": key},
        "metadata": {TTL_FIELD: ttl_ms},
        "createdAt": now,
        "updatedAt": now,
        "version": 1,
    }
    if ttl_ms is not None:
        document["expiresAt"] = now + timedelta(milliseconds=ttl_ms)
    return document


KEYS_50 = [f"key-{i:02d}" for i in range(50)]
USER_1 = [("userId", "u1"), ("agentName", AGENT)]


def test_gets_of_one_namespace_are_one_find(wire: WireServer, wire_lg: DataStoreStore) -> None:
    wire.find_batches.append([found("u1.n", "key-07"), found("u1.n", "key-30")])
    results = wire_lg.batch([GetOp(("u1", "n"), key) for key in KEYS_50])
    assert [item.key if item else None for item in results] == [  # type: ignore[union-attr]
        key if key in ("key-07", "key-30") else None for key in KEYS_50
    ]
    (command,) = wire.take()
    assert without_expiry(command["filter"]) == dict(
        [*USER_1, ("namespace", "u1.n"), ("key", {"$in": KEYS_50})]
    )
    assert command["sort"] == {"namespace": 1, "key": 1}
    assert command["collation"] == SIMPLE
    assert "limit" not in command
    assert "skip" not in command
    # two namespaces (or two users): one find each, and no write for items without TTL
    wire_lg.batch([GetOp(("u1", "n"), "a"), GetOp(("u1", "m"), "a"), GetOp(("u2", "n"), "a")])
    assert wire.names() == ["find", "find", "find"]


def test_a_get_refreshes_only_items_with_a_ttl_in_one_update(
    wire: WireServer, wire_lg: DataStoreStore
) -> None:
    wire.find_batches.append([found("u1.n", "a", 60_000), found("u1.n", "b")])
    wire.find_batches.append([found("u1.m", "c", 120_000)])
    wire_lg.batch([GetOp(("u1", "n"), "a"), GetOp(("u1", "n"), "b"), GetOp(("u1", "m"), "c")])
    _, _, update = wire.take()
    assert next(iter(update)) == "update"
    (statement,) = update["updates"]
    assert statement["multi"] is True
    branches = statement["q"]["$or"]
    assert [
        {name: branch[name] for name in ("userId", "agentName", "namespace", "key")}
        for branch in branches
    ] == [
        {**dict(USER_1), "namespace": "u1.n", "key": {"$in": ["a"]}},
        {**dict(USER_1), "namespace": "u1.m", "key": {"$in": ["c"]}},
    ]
    now = branches[0]["expiresAt"]["$gt"]
    assert statement["u"] == [{"$set": {"expiresAt": {"$add": [now, f"$metadata.{TTL_FIELD}"]}}}]
    # refresh_ttl=False, or no item with a TTL: reads only
    wire.find_batches.append([found("u1.n", "a", 60_000)])
    wire_lg.batch([GetOp(("u1", "n"), "a", refresh_ttl=False)])
    wire.find_batches.append([found("u1.n", "b")])
    wire_lg.batch([GetOp(("u1", "n"), "b")])
    assert wire.names() == ["find", "find"]


def test_a_search_is_one_find_in_index_order(wire: WireServer, wire_lg: DataStoreStore) -> None:
    wire.find_batches.append([found("u1.n", "a"), found("u1.n.x", "b")])
    results = wire_lg.search(("u1", "n"), limit=5, offset=10)
    assert [(item.namespace, item.key) for item in results] == [
        (("u1", "n"), "a"),
        (("u1", "n", "x"), "b"),
    ]
    (command,) = wire.take()
    query = without_expiry(command["filter"])
    namespaces = query.pop("namespace")["$in"]
    assert query == dict(USER_1)
    assert namespaces[0] == "u1.n"
    assert namespaces[1].pattern == r"^u1\.n\."
    assert command["sort"] == {"namespace": 1, "key": 1}
    assert (command["skip"], command["limit"]) == (10, 5)
    assert command["collation"] == SIMPLE
    wire_lg.search(("u1", "n"), limit=0)
    assert wire.take() == []
    # a filter is one more condition of the same find: its translation (tests/test_filters.py)
    wire_lg.search(("u1", "n"), filter={"kind": "note"})
    (command,) = wire.take()
    assert command["filter"]["$and"] == [value_query({"kind": "note"})]
    assert command["filter"]["namespace"]["$in"][0] == "u1.n"


def test_puts_are_one_update_per_namespace_and_ttl_and_deletes_one_delete(
    wire: WireServer, wire_lg: DataStoreStore
) -> None:
    wire_lg.batch([PutOp(("u1", "n"), key, {"i": 1}) for key in KEYS_50])
    (update,) = wire.take()
    assert len(update["updates"]) == 50
    assert update["ordered"] is False
    wire_lg.batch(
        [
            PutOp(("u1", "n"), key, {"i": 1}, ttl=1 if i % 2 else None)
            for i, key in enumerate(KEYS_50)
        ]
    )
    assert [len(command["updates"]) for command in wire.take()] == [25, 25]
    wire_lg.batch([PutOp(("u1", "n"), key, None) for key in KEYS_50])
    (delete,) = wire.take()
    (statement,) = delete["deletes"]
    assert without_expiry(statement["q"]) == dict(
        [*USER_1, ("namespace", "u1.n"), ("key", {"$in": KEYS_50})]
    )


def test_a_mixed_batch_reads_then_writes(wire: WireServer, wire_lg: DataStoreStore) -> None:
    wire.aggregate_batches = [[{"_id": "u1.n"}, {"_id": "u1.m"}]]
    results = wire_lg.batch(
        [
            PutOp(("u1", "n"), "a", {"x": 1}),
            PutOp(("u1", "n"), "b", None),
            ListNamespacesOp((MatchCondition("prefix", ("u1",)),)),
            GetOp(("u1", "n"), "a"),
            SearchOp(("u1",)),
            ListNamespacesOp((MatchCondition("prefix", ("u1", "n")),)),
            GetOp(("u1", "n"), "c"),
        ]
    )
    assert wire.names() == ["find", "find", "aggregate", "delete", "update"]
    assert results[2] == [("u1", "m"), ("u1", "n")]
    assert results[5] == [("u1", "n")]
    wire.take()


def test_a_batch_with_a_bad_op_sends_nothing(wire: WireServer, wire_lg: DataStoreStore) -> None:
    with pytest.raises(TypeError):
        wire_lg.batch([GetOp(("u1", "n"), "a"), PutOp(("u1", "n"), "b", {"x": object()})])
    with pytest.raises(ValueError, match=r"\$where"):  # a filter is checked with the rest
        wire_lg.batch([GetOp(("u1", "n"), "a"), SearchOp(("u1",), filter={"$where": "1"})])
    assert wire.take() == []


# ------------------------------------------------------------ through the store service


@pytest.fixture(params=["remote", "remote-async"])
def remote(
    request: pytest.FixtureRequest, service: ServiceThread, clock: MovableClock
) -> Iterator[RemoteStore]:
    """The store service in front of an embedded store (synchronous, or asynchronous behind
    the asynchronous remote proxy)."""
    yield from remote_store(service, clock, asynchronous=request.param == "remote-async")


def test_through_the_service_the_token_is_the_user_and_each_batch_a_few_requests(
    remote: RemoteStore,
) -> None:
    lg = langgraph_store(remote.proxy("u1", AGENT), user_label=0)
    before = remote.requests
    lg.batch([PutOp(("u1", "notes"), key, {"i": i}) for i, key in enumerate(KEYS_50)])
    assert remote.requests - before == 1
    results = lg.batch(
        [
            *(GetOp(("u1", "notes"), key) for key in KEYS_50),
            SearchOp(("u1",), filter={"i": {"$gte": 48}}),
            ListNamespacesOp((MatchCondition("prefix", ("u1",)),)),
            PutOp(("u1", "notes"), "key-00", None),
        ]
    )
    assert remote.requests - before == 5  # gets, search, listing, delete
    assert [item.value for item in results[:50]] == [{"i": i} for i in range(50)]  # type: ignore[union-attr]
    assert [item.key for item in results[50]] == ["key-48", "key-49"]  # type: ignore[union-attr]
    assert results[51] == [("u1", "notes")]
    assert lg.get(("u1", "notes"), "key-00") is None
    assert {d["userId"] for d in stored(remote)} == {"u1"}
    assert [d["namespace"] for d in stored(remote)][:1] == ["u1.notes"]


def test_through_the_service_another_users_namespace_is_refused_before_sending(
    remote: RemoteStore,
) -> None:
    lg = langgraph_store(remote.proxy("u1", AGENT), user_label=0)
    before = remote.requests
    calls = [
        lambda: lg.get(("u2", "notes"), "k"),
        lambda: lg.put(("u2", "notes"), "k", {"x": 1}),
        lambda: lg.search(("u2",)),
        lambda: lg.list_namespaces(prefix=("u2",)),
        lambda: lg.batch([PutOp(("u1", "n"), "k", {"x": 1}), PutOp(("u2", "n"), "k", {"x": 1})]),
    ]
    for call in calls:
        with pytest.raises(PermissionError, match="token is for user 'u1', not 'u2'"):
            call()
    assert remote.requests == before
    assert stored(remote) == []


def test_through_the_service_a_read_refreshes_the_ttl(
    remote: RemoteStore, clock: MovableClock
) -> None:
    lg = langgraph_store(remote.proxy("u1", AGENT), user_id="u1")
    lg.put(("notes",), "k", {"x": 1}, ttl=1)
    clock.advance(50)
    before = remote.requests
    assert lg.get(("notes",), "k") is not None
    assert remote.requests - before == 2  # the get, and the refresh
    clock.advance(50)
    assert [item.key for item in lg.search(("notes",))] == ["k"]
    clock.advance(61)
    assert lg.get(("notes",), "k") is None


@pytest.mark.asyncio
async def test_a_remote_store_takes_the_tokens_user_and_agent(service: ServiceThread) -> None:
    with RemoteStore(service, agent_datastore.connect("mongomock://")) as remote:
        token = remote.token("u1", AGENT)
        with RemoteDataStoreProxy(remote.url, token) as proxy:
            lg = DataStoreStore(proxy, agent_name=AGENT)
            assert lg.user_id == "u1"
            assert DataStoreStore(proxy, agent_name=AGENT, user_id="u1").user_id == "u1"
            assert DataStoreStore(proxy, agent_name=AGENT, user_label=1).user_id is None
            with pytest.raises(ValueError, match="is not the token's agent 'assistant'"):
                DataStoreStore(proxy, agent_name="other")
            with pytest.raises(ValueError, match="is not the token's user 'u1'"):
                DataStoreStore(proxy, agent_name=AGENT, user_id="u2")
        async with AsyncRemoteDataStoreProxy(remote.url, token) as async_proxy:
            lg = DataStoreStore(async_proxy, agent_name=AGENT, user_label=0)
            await lg.aput(("u1", "n"), "k", {"x": 1})
            item = await lg.aget(("u1", "n"), "k")
            assert item is not None
            assert item.value == {"x": 1}
            with pytest.raises(TypeError, match="over an AsyncRemoteDataStoreProxy runs only"):
                lg.get(("u1", "n"), "k")
