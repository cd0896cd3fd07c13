"""connect(), DataStore ownership, index creation, and an unreachable server."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

import agent_datastore
from agent_datastore import (
    AgentDataStoreProxy,
    DataStore,
    DataStoreUnavailable,
    VersionConflict,
    connect,
)

from .helpers import closed_port

INDEX_NAME = "userId_1_agentName_1_namespace_1_key_1"


def _client(store: DataStore) -> Any:
    return store.collection.database.client


def _seeds(store: DataStore) -> set[tuple[str, int | None]]:
    return set(_client(store).topology_description.server_descriptions())


# ------------------------------------------------------------------------------------ connect


def test_connect_defaults_to_a_new_private_embedded_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_DATASTORE_URI", raising=False)
    with connect() as first, connect() as second, connect("mongomock://") as third:
        first.proxy("u", "a").set("k", 1)
        assert first.proxy("u", "a").get("k") == 1
        assert second.proxy("u", "a").get("k") is None
        assert third.proxy("u", "a").list_namespaces() == []
        assert first.collection.full_name == "agent_datastore.items"


def test_connect_uses_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    monkeypatch.setenv("AGENT_DATASTORE_URI", f"mongodb://127.0.0.1:{port}/from_env")
    with connect() as store:
        assert isinstance(_client(store), MongoClient)
        assert _seeds(store) == {("127.0.0.1", port)}
        assert store.collection.database.name == "from_env"


def test_connect_takes_the_database_from_the_uri_path_or_a_default() -> None:
    port = closed_port()
    with connect(f"mongodb://127.0.0.1:{port}/tenant_data") as store:
        assert store.collection.full_name == "tenant_data.items"
    with connect(f"mongodb://127.0.0.1:{port}") as store:
        assert store.collection.full_name == "agent_datastore.items"
    with connect(f"mongodb://127.0.0.1:{port}/?appname=x") as store:
        assert store.collection.full_name == "agent_datastore.items"
    with connect(f"mongodb://127.0.0.1:{port}/x", database="y", collection="z") as store:
        assert store.collection.full_name == "y.z"
    with connect("mongomock:///embedded_db") as store:
        assert store.collection.full_name == "embedded_db.items"


def test_client_defaults_fail_fast_and_uri_and_keyword_options_win() -> None:
    port = closed_port()
    with connect(f"mongodb://127.0.0.1:{port}") as store:
        options = _client(store).options
        assert options.server_selection_timeout == 5
        assert options.pool_options.connect_timeout == 5
        assert options.pool_options.socket_timeout == 30
    uri = f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=1234&socketTimeoutMS=7000"
    with connect(uri) as store:
        options = _client(store).options
        assert options.server_selection_timeout == 1.234
        assert options.pool_options.socket_timeout == 7
        assert options.pool_options.connect_timeout == 5
    with connect(uri, serverselectiontimeoutms=42) as store:
        assert _client(store).options.server_selection_timeout == 0.042


def test_connect_rejects_other_schemes_and_types() -> None:
    with pytest.raises(ValueError, match="unsupported URI scheme 'postgres'"):
        connect("postgres://localhost/db")
    with pytest.raises(ValueError, match="unsupported URI scheme"):
        connect("localhost:27017")
    with pytest.raises(TypeError, match="uri must be a str"):
        connect(27017)  # type: ignore[arg-type]


def test_srv_uri_neither_blocks_nor_fails_until_first_use() -> None:
    started = time.monotonic()
    store = connect("mongodb+srv://cluster0.example.invalid/app", connectTimeoutMS=1000)
    assert time.monotonic() - started < 1
    assert store.collection.full_name == "app.items"
    with store, pytest.raises(DataStoreUnavailable):
        store.proxy("u", "a").get("k")


# ------------------------------------------------------------------------ unreachable server

OPERATIONS: dict[str, Callable[[AgentDataStoreProxy], Any]] = {
    "get": lambda p: p.get("k"),
    "set": lambda p: p.set("k", 1, metadata={"m": 1}),
    "delete": lambda p: p.delete("k"),
    "list_keys": lambda p: p.list_keys(),
    "list_keys prefix": lambda p: p.list_keys(prefix="a"),
    "list_namespaces": lambda p: p.list_namespaces(),
    "use_namespace then get": lambda p: p.use_namespace("n").get("k"),
    "clear": lambda p: p.clear(),
    "get_many": lambda p: p.get_many(["a", "b"]),
    "delete_many": lambda p: p.delete_many(["a", "b"]),
    "set_many": lambda p: p.set_many({"a": 1, "b": 2}),
    "get_item": lambda p: p.get_item("k"),
    "set ttl": lambda p: p.set("k", 1, ttl=60),
    "set if_version": lambda p: p.set("k", 1, if_version=3),
    "set if absent": lambda p: p.set("k", 1, if_version=0),
    "delete if_version": lambda p: p.delete("k", if_version=3),
    "delete if absent": lambda p: p.delete("k", if_version=0),
    "increment": lambda p: p.increment("k", ttl=60),
    "list_keys page": lambda p: p.list_keys(limit=10, start_after="a"),
    "iter_keys": lambda p: list(p.iter_keys()),
    "list_items": lambda p: p.list_items(prefix="a", limit=5),
    "set_many ttl": lambda p: p.set_many({"a": 1}, ttl=5),
}


def test_connecting_to_an_unreachable_server_neither_blocks_nor_fails() -> None:
    started = time.monotonic()
    store = connect(f"mongodb://127.0.0.1:{closed_port()}/")
    proxy = store.proxy("u", "a")
    store.close()
    assert proxy.namespace == "default"
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_every_method_raises_unavailable_within_the_timeout(operation: str) -> None:
    timeout = 0.3
    uri = f"mongodb://127.0.0.1:{closed_port()}/?serverSelectionTimeoutMS={int(timeout * 1000)}"
    with connect(uri) as store:
        proxy = store.proxy("u", "a")
        started = time.monotonic()
        with pytest.raises(DataStoreUnavailable) as caught:
            OPERATIONS[operation](proxy)
        elapsed = time.monotonic() - started
    assert caught.value.status_code == 503
    assert isinstance(caught.value.__cause__, ServerSelectionTimeoutError)
    assert "database unavailable" in caught.value.detail
    # it gave up after the configured selection timeout, far from pymongo's default 30 s
    assert elapsed < timeout + 3


def test_empty_batches_need_no_server() -> None:
    with connect(f"mongodb://127.0.0.1:{closed_port()}/?serverSelectionTimeoutMS=100") as store:
        proxy = store.proxy("u", "a")
        assert proxy.get_many([]) == {}
        assert proxy.set_many({}) == 0


# -------------------------------------------------------------------------- DataStore itself


def test_datastore_wraps_a_caller_owned_collection_and_leaves_it_open() -> None:
    port = closed_port()
    client: MongoClient[Any] = MongoClient(
        f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=100
    )
    collection = client.app.agent_items
    with DataStore(collection) as store:
        assert store.collection is collection
    # still the caller's working client: pymongo refuses a closed client with InvalidOperation
    with pytest.raises(ServerSelectionTimeoutError):
        collection.find_one({})
    client.close()


def test_a_closed_store_refuses_calls() -> None:
    store = connect("mongomock://")
    proxy = store.proxy("u", "a")
    proxy.set("k", 1)
    store.close()
    store.close()  # idempotent
    with pytest.raises(DataStoreUnavailable, match="closed"):
        proxy.get("k")
    assert "closed" in repr(store)


def test_connect_owns_and_closes_its_client() -> None:
    store = connect(f"mongodb://127.0.0.1:{closed_port()}/?serverSelectionTimeoutMS=100")
    client = _client(store)
    store.close()
    # pymongo rejects a closed client: proof the store closed it
    with pytest.raises(Exception, match="after close"):
        client.app.c.find_one({})


def test_proxy_requires_a_datastore() -> None:
    with pytest.raises(TypeError, match="store must be a DataStore"):
        agent_datastore.AgentDataStoreProxy(object(), "u", "a")  # type: ignore[arg-type]


@pytest.mark.parametrize("opener", [connect, agent_datastore.connect_async])
def test_proxy_is_read_only_and_has_a_useful_repr(opener: Callable[..., Any]) -> None:
    proxy = opener("mongomock://").proxy("user-1", "agent-a")
    with pytest.raises(AttributeError):
        proxy.namespace = "other"
    with pytest.raises(AttributeError):
        proxy.extra = 1
    assert repr(proxy) == (
        f"{type(proxy).__name__}(user_id='user-1', agent_name='agent-a', namespace='default')"
    )


# ------------------------------------------------------------------------------------ indexes


class CountingIndexes:
    """Counts the index commands on a store's collection: ``listings`` (``listIndexes``, with
    which every attempt to ensure the indexes starts) and ``creations`` (``createIndexes``),
    optionally failing the first listings."""

    def __init__(self, store: DataStore, failures: int = 0, delay: float = 0.0) -> None:
        self.listings = 0
        self.creations = 0
        self._failures = failures
        self._delay = delay
        target = store._target
        self._list, self._create = target.index_information, target.create_indexes
        target.index_information = self.list  # type: ignore[method-assign]
        target.create_indexes = self.create  # type: ignore[method-assign]

    def list(self) -> dict[str, Any]:
        self.listings += 1
        if self.listings <= self._failures:
            time.sleep(self._delay)  # the other threads arrive while this attempt runs
            raise AutoReconnect("connection closed")
        time.sleep(0.01)  # widen the window for racing threads
        return self._list()

    def create(self, *args: Any, **kwargs: Any) -> list[str]:
        self.creations += 1
        return self._create(*args, **kwargs)


def test_the_unique_index_has_the_documented_spec(
    store: DataStore, data_store: AgentDataStoreProxy
) -> None:
    data_store.get("k")
    index = store.collection.index_information()[INDEX_NAME]
    assert index["key"] == [("userId", 1), ("agentName", 1), ("namespace", 1), ("key", 1)]
    assert index["unique"] is True


def test_indexes_are_ensured_once_on_first_use() -> None:
    with connect("mongomock://") as store:
        counter = CountingIndexes(store)
        assert (counter.listings, counter.creations) == (0, 0)  # creating them touches nothing
        proxy = store.proxy("u", "a")
        for operation in OPERATIONS.values():
            with contextlib.suppress(VersionConflict):  # the if_version calls conflict here
                operation(proxy)
        assert (counter.listings, counter.creations) == (1, 1)  # both indexes in one command
        store.ensure_indexes()  # explicit calls always run, and find both indexes there
        assert (counter.listings, counter.creations) == (2, 1)


def test_indexes_are_ensured_once_across_racing_threads() -> None:
    with connect("mongomock://") as store:
        counter = CountingIndexes(store)
        proxy = store.proxy("u", "a")
        barrier = threading.Barrier(12, timeout=30)

        def first_call(i: int) -> None:
            barrier.wait()
            proxy.set(f"k{i}", i)

        threads = [threading.Thread(target=first_call, args=(i,)) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert (counter.listings, counter.creations) == (1, 1)
        assert len(proxy.list_keys()) == 12


def test_threads_waiting_for_the_index_share_one_attempt_and_its_failure() -> None:
    with connect("mongomock://") as store:
        counter = CountingIndexes(store, failures=1, delay=0.2)
        proxy = store.proxy("u", "a")
        outcomes: list[BaseException | None] = []
        barrier = threading.Barrier(8, timeout=30)

        def first_call() -> None:
            barrier.wait()
            try:
                proxy.get("k")
                outcomes.append(None)
            except DataStoreUnavailable as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=first_call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # one failed attempt, shared by every thread that waited for it: not one timeout
        # after another
        assert counter.listings == 1
        assert len(outcomes) == 8
        assert all(isinstance(outcome, DataStoreUnavailable) for outcome in outcomes)
        proxy.get("k")  # the next call tries again, and succeeds
        assert (counter.listings, counter.creations) == (2, 1)


def test_a_failed_index_build_is_retried_on_the_next_call() -> None:
    with connect("mongomock://") as store:
        counter = CountingIndexes(store, failures=1)
        proxy = store.proxy("u", "a")
        with pytest.raises(DataStoreUnavailable):
            proxy.set("k", 1)
        assert proxy.list_keys() == []
        proxy.set("k", 1)
        proxy.get("k")
        # the failed listing, then one listing and one creation of both indexes
        assert (counter.listings, counter.creations) == (2, 1)


def test_ensure_indexes_false_skips_index_creation() -> None:
    with connect("mongomock://", ensure_indexes=False) as store:
        store.proxy("u", "a").set("k", 1)
        assert INDEX_NAME not in store.collection.index_information()
