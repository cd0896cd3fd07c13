"""Contract of ``delete_many``, on every backend of the ``store`` fixture (embedded, async,
remote, and a real server when MONGODB_URI is set): the number of live items deleted, the
same key rules as ``get_many``, and the same idea of "existed" as ``delete``."""

from __future__ import annotations

import inspect

import pytest

from agent_datastore import (
    AgentDataStoreProxy,
    AsyncAgentDataStoreProxy,
    AsyncRemoteDataStoreProxy,
    DataStore,
    RemoteDataStoreProxy,
)

from .helpers import MovableClock, snapshot


def test_delete_many_deletes_the_keys_that_exist_and_counts_them(
    data_store: AgentDataStoreProxy,
) -> None:
    data_store.set_many({"file1": 1, "file2": 2, "file3": 3})
    assert data_store.delete_many(["file1", "file3", "file4"]) == 2
    assert data_store.list_keys() == ["file2"]
    assert data_store.delete_many(["file1", "file3"]) == 0
    assert data_store.get_many(["file1", "file2", "file3"]) == {"file2": 2}


def test_delete_many_counts_a_repeated_key_once(data_store: AgentDataStoreProxy) -> None:
    data_store.set_many({"a": 1, "b": None})
    assert data_store.delete_many(["b", "a", "b", "a", "zz"]) == 2
    assert data_store.list_keys() == []


def test_delete_many_of_nothing_deletes_nothing(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    data_store.set("a", 1)
    before = snapshot(store)
    assert data_store.delete_many([]) == 0
    assert data_store.delete_many(()) == 0
    assert data_store.delete_many(["nope"]) == 0
    assert snapshot(store) == before


def test_delete_many_accepts_tuples_and_other_iterables(data_store: AgentDataStoreProxy) -> None:
    data_store.set_many({"a": 1, "b": 2, "c": 3})
    assert data_store.delete_many(("a",)) == 1
    assert data_store.delete_many(key for key in ["b", "c"]) == 2
    assert data_store.list_keys() == []


def test_delete_many_counts_what_delete_counts(
    data_store: AgentDataStoreProxy, clock: MovableClock
) -> None:
    # the same items in two namespaces: one deleted key by key, the other in one call
    one_by_one, at_once = data_store.use_namespace("one"), data_store.use_namespace("many")
    for proxy in (one_by_one, at_once):
        proxy.set_many({"live": 1, "kept": 2})
        proxy.set("forever", 3, ttl=3600)
        proxy.set_many({"old-1": 4, "old-2": 5}, ttl=1)
    clock.advance(2)
    keys = ["live", "forever", "old-1", "old-2", "never-set"]
    counted = sum(one_by_one.delete(key) for key in keys)
    assert counted == 2
    assert at_once.delete_many(keys) == counted
    for proxy in (one_by_one, at_once):
        assert proxy.list_keys() == ["kept"]
        assert proxy.get_many(keys) == {}


def test_an_expired_item_is_not_counted_and_stays_gone(
    data_store: AgentDataStoreProxy, clock: MovableClock
) -> None:
    data_store.set_many({"short-1": 1, "short-2": 2}, ttl=1)
    data_store.set("long", 3, ttl=60)
    clock.advance(2)
    assert data_store.delete_many(["short-1", "short-2", "long"]) == 1
    assert data_store.get_many(["short-1", "short-2", "long"]) == {}
    assert data_store.list_keys() == []
    # an expired key written again is a new item, which delete_many counts
    data_store.set("short-1", "again")
    assert data_store.get_item("short-1").version == 1  # type: ignore[union-attr]
    assert data_store.delete_many(["short-1", "short-2"]) == 1


def test_delete_many_stays_in_its_user_agent_and_namespace(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    neighbours = [
        store.proxy("user-2", "agent-a"),
        store.proxy("user-1", "agent-b"),
        data_store.use_namespace("other"),
        store.proxy("USER-1", "agent-a"),
    ]
    for proxy in [data_store, *neighbours]:
        proxy.set_many({"k": proxy.namespace, "$gt": 1, ".*": 2})
    assert data_store.delete_many(["k", "$gt", ".*", "K"]) == 3
    assert data_store.list_keys() == []
    for proxy in neighbours:
        assert proxy.get_many(["k", "$gt", ".*"]) == {"k": proxy.namespace, "$gt": 1, ".*": 2}


def test_keys_are_compared_exactly(data_store: AgentDataStoreProxy) -> None:
    data_store.set_many({"a": 1, "A": 2, "a ": 3, "é": 4, "e\u0301": 5})
    assert data_store.delete_many(["a", "é"]) == 2
    assert data_store.list_keys() == ["A", "a ", "e\u0301"]


@pytest.mark.parametrize(
    ("keys", "error", "message"),
    [
        ("abc", TypeError, "keys must be a list of str, not str"),
        ({"a": 1}, TypeError, "keys must be a list of str, not dict"),
        (["a", 5], TypeError, "key must be a str, not int"),
        (["a", ""], ValueError, "key must not be empty"),
        (["a", {"$ne": None}], TypeError, "key must be a str, not dict"),
    ],
)
def test_bad_keys_get_get_manys_errors_and_delete_nothing(
    data_store: AgentDataStoreProxy, store: DataStore, keys: object, error: type, message: str
) -> None:
    data_store.set_many({"a": 1, "abc": 2})
    before = snapshot(store)
    with pytest.raises(error, match=message):
        data_store.get_many(keys)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        data_store.delete_many(keys)  # type: ignore[arg-type]
    assert snapshot(store) == before


def test_a_key_list_over_the_command_limit_is_refused_by_name(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    data_store.set("a", 1)
    before = snapshot(store)
    with pytest.raises(ValueError, match="delete_many of 17000 keys needs a"):
        data_store.delete_many([f"{i:01000d}" for i in range(17_000)])
    assert snapshot(store) == before


PROXIES = [
    AgentDataStoreProxy,
    AsyncAgentDataStoreProxy,
    RemoteDataStoreProxy,
    AsyncRemoteDataStoreProxy,
]


def _methods(proxy_class: type) -> dict[str, list[inspect.Parameter]]:
    """Each public method's parameters (return types differ by design: a twin returns its
    own kind of proxy and iterator)."""
    closing = {"close", "aclose"}  # only the remote proxies own an HTTP client
    return {
        name: list(inspect.signature(member).parameters.values())
        for name, member in inspect.getmembers(proxy_class, inspect.isfunction)
        if not name.startswith("_") and name not in closing
    }


def test_the_four_proxies_have_the_same_methods_and_signatures() -> None:
    local = _methods(AgentDataStoreProxy)
    assert "delete_many" in local
    for proxy_class in PROXIES[1:]:
        assert _methods(proxy_class) == local, proxy_class.__name__
    for proxy_class in PROXIES:
        # the async twins' database calls are coroutines; use_namespace and iter_keys are not
        asynchronous = proxy_class.__name__.startswith("Async")
        assert inspect.iscoroutinefunction(proxy_class.delete_many) is asynchronous
