"""Contract of versions, compare-and-set (``if_version``), counters (``increment``) and the
store's value size limit, on every backend of the ``store`` fixture."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

import agent_datastore
from agent_datastore import (
    AgentDataStoreProxy,
    DataStore,
    DataStoreError,
    HTTPException,
    VersionConflict,
)

from .helpers import MovableClock, snapshot


def version(proxy: AgentDataStoreProxy, key: str) -> int:
    item = proxy.get_item(key)
    return 0 if item is None else item.version


def run_in_threads(count: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count, timeout=60)

    def target(index: int) -> None:
        try:
            barrier.wait()
            work(index)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# -------------------------------------------------------------------------------- versions


def test_every_write_goes_up_one_version(data_store: AgentDataStoreProxy) -> None:
    data_store.set("k", 1)
    assert version(data_store, "k") == 1
    data_store.set("k", 2, metadata={"m": 1})
    data_store.set_many({"k": 3})
    data_store.increment("n")
    data_store.increment("n")
    assert (version(data_store, "k"), version(data_store, "n")) == (3, 2)
    data_store.delete("k")
    data_store.set("k", 4)
    assert version(data_store, "k") == 1  # a deleted item is gone: its successor is new


def test_if_version_zero_writes_only_an_absent_item(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    data_store.set("lock", {"owner": "run-1"}, if_version=0)
    assert version(data_store, "lock") == 1
    before = snapshot(store)
    with pytest.raises(VersionConflict) as caught:
        data_store.set("lock", {"owner": "run-2"}, if_version=0)
    assert caught.value.current_version == 1
    assert snapshot(store) == before


def test_if_version_n_writes_only_at_version_n(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    data_store.set("doc", "v1", metadata={"a": 1})
    data_store.set("doc", "v2", if_version=1)
    assert version(data_store, "doc") == 2
    before = snapshot(store)
    for stale in (1, 3, 10**12):
        with pytest.raises(VersionConflict) as caught:
            data_store.set("doc", "lost", metadata={"b": 2}, ttl=5, if_version=stale)
        assert (caught.value.current_version, caught.value.expected_version) == (2, stale)
        assert caught.value.key == "doc"
    assert snapshot(store) == before
    assert data_store.get_item("doc").metadata == {"a": 1}  # type: ignore[union-attr]


def test_if_version_n_never_creates_an_item(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    with pytest.raises(VersionConflict) as caught:
        data_store.set("ghost", 1, if_version=1)
    assert caught.value.current_version == 0
    assert snapshot(store) == []


def test_an_expired_item_counts_as_absent_for_if_version(
    data_store: AgentDataStoreProxy, clock: MovableClock
) -> None:
    data_store.set("k", 1, ttl=10)
    clock.advance(11)
    with pytest.raises(VersionConflict) as caught:
        data_store.set("k", 2, if_version=1)
    assert caught.value.current_version == 0
    data_store.set("k", 2, metadata={"new": 1}, if_version=0)
    item = data_store.get_item("k")
    assert item is not None
    assert (item.value, item.version, item.metadata, item.expiresAt) == (2, 1, {"new": 1}, None)


def test_delete_if_version(data_store: AgentDataStoreProxy, store: DataStore) -> None:
    data_store.set("k", 1)
    data_store.set("k", 2)
    before = snapshot(store)
    with pytest.raises(VersionConflict) as caught:
        data_store.delete("k", if_version=1)
    assert caught.value.current_version == 2
    with pytest.raises(VersionConflict) as caught:
        data_store.delete("k", if_version=0)  # "only if absent": it is not
    assert caught.value.current_version == 2
    assert snapshot(store) == before
    assert data_store.delete("k", if_version=2) is True
    assert data_store.delete("k", if_version=0) is False  # absent, as asserted
    with pytest.raises(VersionConflict) as caught:
        data_store.delete("k", if_version=2)
    assert caught.value.current_version == 0


def test_a_version_conflict_is_an_http_409(data_store: AgentDataStoreProxy) -> None:
    data_store.set("k", 1)
    with pytest.raises(HTTPException) as caught:
        data_store.set("k", 1, if_version=0)
    assert caught.value.status_code == 409
    assert caught.value.detail == "key 'k' is at version 1, not absent"
    with pytest.raises(VersionConflict, match="key 'x' does not exist, not version 4"):
        data_store.delete("x", if_version=4)


@pytest.mark.parametrize(
    ("if_version", "error"),
    [(-1, ValueError), (2**63, ValueError), (True, TypeError), (1.0, TypeError), ("1", TypeError)],
)
def test_a_bad_if_version_is_refused_and_changes_nothing(
    data_store: AgentDataStoreProxy, store: DataStore, if_version: Any, error: type
) -> None:
    data_store.set("k", 1)
    before = snapshot(store)
    with pytest.raises(error, match="if_version"):
        data_store.set("k", 2, if_version=if_version)
    with pytest.raises(error, match="if_version"):
        data_store.delete("k", if_version=if_version)
    assert snapshot(store) == before


def test_a_read_modify_write_loop_with_if_version_loses_no_update(
    data_store: AgentDataStoreProxy,
) -> None:
    data_store.set("log", [])

    def append(entry: int) -> None:
        for _ in range(200):
            item = data_store.get_item("log")
            assert item is not None
            try:
                data_store.set("log", [*item.value, entry], if_version=item.version)
                return
            except VersionConflict:
                continue
        raise AssertionError("no progress")

    run_in_threads(8, append)
    assert sorted(data_store.get("log")) == list(range(8))
    assert version(data_store, "log") == 9


@pytest.mark.parametrize("call", ["set", "set if_version", "increment", "get_item"])
def test_a_malformed_stored_version_is_a_database_error(
    data_store: AgentDataStoreProxy, store: DataStore, call: str
) -> None:
    data_store.set("k", 1)
    store.collection.update_one({"key": "k"}, {"$set": {"version": "3"}})  # written by hand
    action = {
        "set": lambda: data_store.set("k", 2),
        "set if_version": lambda: data_store.set("k", 2, if_version=3),
        "increment": lambda: data_store.increment("k"),
        "get_item": lambda: data_store.get_item("k"),
    }[call]
    with pytest.raises(DataStoreError):
        action()


# -------------------------------------------------------------------------------- counters


def test_increment_creates_from_zero_and_returns_the_new_value(
    data_store: AgentDataStoreProxy,
) -> None:
    assert data_store.increment("runs") == 1
    assert data_store.increment("runs") == 2
    assert data_store.increment("runs", 40) == 42
    assert data_store.increment("runs", -50) == -8
    assert data_store.increment("runs", 0) == -8
    assert data_store.get("runs") == -8
    assert data_store.increment("fresh", -3) == -3


def test_increment_keeps_metadata_and_expiry_of_a_live_counter(
    data_store: AgentDataStoreProxy, clock: MovableClock
) -> None:
    data_store.set("hits", 10, metadata={"window": "1m"}, ttl=60)
    expires = data_store.get_item("hits").expiresAt  # type: ignore[union-attr]
    assert data_store.increment("hits") == 11
    item = data_store.get_item("hits")
    assert item is not None
    assert (item.metadata, item.expiresAt, item.version) == ({"window": "1m"}, expires, 2)
    clock.advance(61)
    assert data_store.increment("hits") == 1  # the window expired: a new counter
    item = data_store.get_item("hits")
    assert item is not None
    assert (item.metadata, item.expiresAt, item.version) == ({}, None, 1)


def test_increment_ttl_applies_only_when_it_creates_the_counter(
    data_store: AgentDataStoreProxy, clock: MovableClock
) -> None:
    assert data_store.increment("window", ttl=60) == 1
    first = data_store.get_item("window")
    clock.advance(30)
    assert data_store.increment("window", ttl=60) == 2  # the same window: its expiry is kept
    assert data_store.get_item("window").expiresAt == first.expiresAt  # type: ignore[union-attr]
    clock.advance(31)
    assert data_store.increment("window", ttl=60) == 1  # a new window
    later = data_store.get_item("window")
    assert later is not None
    assert first is not None
    assert later.expiresAt == later.createdAt + timedelta(seconds=60) > first.expiresAt  # type: ignore[operator]
    with pytest.raises(ValueError, match="ttl"):
        data_store.increment("window", ttl=0)


@pytest.mark.parametrize("value", ["7", 7.0, 1.5, True, None, [1], {"n": 1}])
def test_increment_of_a_value_that_is_not_an_int_is_a_type_error(
    data_store: AgentDataStoreProxy, store: DataStore, value: Any
) -> None:
    data_store.set("k", value)
    before = snapshot(store)
    with pytest.raises(TypeError, match="cannot increment key 'k'"):
        data_store.increment("k")
    assert snapshot(store) == before


@pytest.mark.parametrize(("stored", "amount"), [(2**63 - 1, 1), (-(2**63), -1), (2**70, 1), (0, 0)])
def test_increment_stays_within_64_bits(
    data_store: AgentDataStoreProxy, store: DataStore, stored: int, amount: int
) -> None:
    data_store.set("k", stored)
    if amount == 0:
        assert data_store.increment("k", amount) == stored
        return
    before = snapshot(store)
    with pytest.raises(ValueError, match="64-bit"):
        data_store.increment("k", amount)
    assert snapshot(store) == before


@pytest.mark.parametrize(
    ("amount", "error"),
    [(True, TypeError), (1.0, TypeError), ("1", TypeError), (None, TypeError), (2**63, ValueError)],
)
def test_a_bad_amount_is_refused_and_changes_nothing(
    data_store: AgentDataStoreProxy, store: DataStore, amount: Any, error: type
) -> None:
    before = snapshot(store)
    with pytest.raises(error, match="amount"):
        data_store.increment("k", amount)
    assert snapshot(store) == before


def test_concurrent_increments_lose_nothing(data_store: AgentDataStoreProxy) -> None:
    results: list[list[int]] = [[] for _ in range(8)]

    def work(index: int) -> None:
        for _ in range(100):
            results[index].append(data_store.increment("counter"))

    run_in_threads(8, work)
    assert data_store.get("counter") == 800
    seen = sorted(value for values in results for value in values)
    assert seen == list(range(1, 801))  # every caller saw its own, distinct new value


def test_concurrent_increments_from_two_stores_lose_nothing(store: DataStore) -> None:
    other = DataStore(store.collection)  # a second store on the same collection
    proxies = [store.proxy("u", "a"), other.proxy("u", "a")]

    def work(index: int) -> None:
        for _ in range(100):
            proxies[index % 2].increment("counter")

    run_in_threads(4, work)
    assert proxies[0].get("counter") == 400


# ------------------------------------------------------------------------- value size limit


def test_the_store_limit_names_the_key_the_size_and_the_limit() -> None:
    with agent_datastore.connect("mongomock://", max_value_bytes=100) as store:
        proxy = store.proxy("u", "a")
        proxy.set("fits", "x" * 95)  # a string is 4 + its bytes + 1 in BSON
        with pytest.raises(ValueError, match=r"key 'big' is 101 bytes, over .* limit of 100"):
            proxy.set("big", "x" * 96)
        before = snapshot(store)
        with pytest.raises(ValueError, match="'big'"):
            proxy.set_many({"small": 1, "big": "x" * 96})
        assert snapshot(store) == before
        assert store.max_value_bytes == 100


def test_the_default_limit_is_what_fits_one_document() -> None:
    with agent_datastore.connect("mongomock://") as store:
        assert store.max_value_bytes == 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("limit", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (2**24 + 1, ValueError),
        (True, TypeError),
        ("1", TypeError),
    ],
)
def test_a_bad_limit_is_refused(limit: Any, error: type) -> None:
    with pytest.raises(error, match="max_value_bytes"):
        agent_datastore.connect("mongomock://", max_value_bytes=limit)
