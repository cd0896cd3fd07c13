"""Contract of expiry (``ttl``), on every backend of the ``store`` fixture. The store's clock
is moved forward rather than slept through, so expiry is decided by the store's own filters,
as on a server whose TTL monitor (about once a minute) has not run yet."""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import Any

import pytest

from agent_datastore import AgentDataStoreProxy, DataStore

from .helpers import MovableClock, snapshot


def test_an_item_with_a_ttl_is_readable_until_it_expires(
    data_store: AgentDataStoreProxy, clock: MovableClock
) -> None:
    data_store.set("token", "abc", ttl=60)
    clock.advance(59)
    assert data_store.get("token") == "abc"
    clock.advance(2)
    assert data_store.get("token") is None
    assert data_store.get("token", default="gone") == "gone"


def test_an_expired_item_is_invisible_to_every_read(
    store: DataStore, data_store: AgentDataStoreProxy, clock: MovableClock
) -> None:
    cache = data_store.use_namespace("cache")
    cache.set("short", 1, ttl=10)
    cache.set_many({"batch-1": 1, "batch-2": 2}, ttl=timedelta(seconds=10))
    data_store.set("kept", 1)
    clock.advance(11)
    assert cache.get("short") is None
    assert cache.get_item("short") is None
    assert cache.get_many(["short", "batch-1", "batch-2"]) == {}
    assert cache.list_keys() == []
    assert cache.list_keys(prefix="batch", limit=5) == []
    assert list(cache.iter_keys()) == []
    assert cache.list_items() == []
    assert data_store.list_namespaces() == ["default"]  # "cache" holds nothing live
    assert len(list(store.collection.find({"namespace": "cache"}))) == 3  # not yet deleted


def test_items_expire_between_calls(data_store: AgentDataStoreProxy, clock: MovableClock) -> None:
    data_store.set_many({"a": 1, "b": 2, "c": 3}, ttl=5)
    data_store.set("b", 2, ttl=15)
    data_store.set("c", 3)  # a set without ttl: this one no longer expires
    assert data_store.list_keys() == ["a", "b", "c"]
    clock.advance(6)
    assert data_store.list_keys() == ["b", "c"]
    clock.advance(10)
    assert data_store.list_keys() == ["c"]
    clock.advance(10**6)
    assert data_store.get_many(["a", "b", "c"]) == {"c": 3}


def test_delete_removes_an_expired_leftover_without_counting_it(
    data_store: AgentDataStoreProxy, store: DataStore, clock: MovableClock
) -> None:
    data_store.set("k", 1, ttl=1)
    clock.advance(2)
    assert data_store.delete("k") is False
    assert list(store.collection.find({"key": "k"})) == []  # not left for the TTL monitor


def test_delete_and_clear_do_not_count_expired_items(
    data_store: AgentDataStoreProxy, clock: MovableClock
) -> None:
    data_store.set_many({"old-1": 1, "old-2": 2}, ttl=1)
    data_store.set("live", 1)
    clock.advance(2)
    assert data_store.delete("old-1") is False
    assert data_store.clear() == 1
    assert data_store.list_keys() == []


def test_writing_an_expired_key_starts_a_new_item(
    data_store: AgentDataStoreProxy, clock: MovableClock
) -> None:
    data_store.set("k", "old", metadata={"owner": "first"}, ttl=30)
    data_store.set("k", "old again", metadata={"round": 2}, ttl=30)
    before = data_store.get_item("k")
    assert before is not None
    assert before.version == 2
    clock.advance(31)
    data_store.set("k", "new", metadata={"fresh": True})
    item = data_store.get_item("k")
    assert item is not None
    assert item.value == "new"
    assert item.metadata == {"fresh": True}  # none of the old metadata
    assert item.version == 1
    assert item.createdAt > before.createdAt
    assert item.expiresAt is None


def test_set_many_over_expired_items_starts_them_again(
    data_store: AgentDataStoreProxy, clock: MovableClock
) -> None:
    data_store.set("k", 1, metadata={"old": 1}, ttl=1)
    clock.advance(2)
    data_store.set_many({"k": 2})
    item = data_store.get_item("k")
    assert item is not None
    assert (item.value, item.metadata, item.version) == (2, {}, 1)


def test_a_set_without_ttl_removes_the_expiry(
    data_store: AgentDataStoreProxy, clock: MovableClock
) -> None:
    data_store.set("k", 1, ttl=5)
    data_store.set("k", 2)
    clock.advance(3600)
    item = data_store.get_item("k")
    assert item is not None
    assert (item.value, item.expiresAt, item.version) == (2, None, 2)


def test_a_new_ttl_replaces_the_old_one(
    data_store: AgentDataStoreProxy, clock: MovableClock
) -> None:
    data_store.set("k", 1, ttl=5)
    data_store.set("k", 2, ttl=60)
    clock.advance(30)
    assert data_store.get("k") == 2


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        (1, timedelta(seconds=1)),
        (2.5, timedelta(seconds=2.5)),
        (timedelta(days=30), timedelta(days=30)),
        (0.0001, timedelta(milliseconds=1)),  # rounded up: a positive ttl is never zero
        (1.0001, timedelta(milliseconds=1001)),
        (2.007, timedelta(milliseconds=2007)),  # no float error carried into the rounding
        (0.1 + 0.2, timedelta(milliseconds=300)),  # float noise under a microsecond: ignored
        (0.3001, timedelta(milliseconds=301)),
        (1e-12, timedelta(milliseconds=1)),
        (timedelta(days=36_500), timedelta(days=36_500)),
    ],
)
def test_expires_at_is_the_write_time_plus_the_ttl_in_whole_milliseconds(
    data_store: AgentDataStoreProxy, clock: MovableClock, ttl: Any, expected: timedelta
) -> None:
    clock.freeze()  # a 1 ms item would be gone by the time it is read
    data_store.set("k", 1, ttl=ttl)
    item = data_store.get_item("k")
    assert item is not None
    assert item.expiresAt is not None
    assert item.expiresAt - item.updatedAt == expected


BAD_TTLS: list[tuple[Any, type]] = [
    (0, ValueError),
    (0.0, ValueError),
    (-1, ValueError),
    (timedelta(0), ValueError),
    (timedelta(seconds=-5), ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    (-math.inf, ValueError),
    (10**400, ValueError),
    (36_500 * 86_400 + 1, ValueError),
    (timedelta(days=36_501), ValueError),
    (True, TypeError),
    ("60", TypeError),
    ([60], TypeError),
]


@pytest.mark.parametrize(("ttl", "error"), BAD_TTLS)
def test_a_bad_ttl_is_refused_and_changes_nothing(
    data_store: AgentDataStoreProxy, store: DataStore, ttl: Any, error: type
) -> None:
    data_store.set("k", "kept")
    before = snapshot(store)
    with pytest.raises(error, match="ttl"):
        data_store.set("k", "new", ttl=ttl)
    with pytest.raises(error, match="ttl"):
        data_store.set_many({"k": "new", "other": 1}, ttl=ttl)
    assert snapshot(store) == before


def test_an_item_expires_in_real_time_too(data_store: AgentDataStoreProxy) -> None:
    data_store.set("k", 1, ttl=0.05)
    time.sleep(0.1)
    assert data_store.get("k") is None


def test_the_ttl_index_lets_the_server_delete_expired_items(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    data_store.set("k", 1, ttl=60)
    indexes = store.collection.index_information()
    assert indexes["expiresAt_1"]["key"] == [("expiresAt", 1)]
    assert indexes["expiresAt_1"]["expireAfterSeconds"] == 0
    assert indexes["expiresAt_1"].get("sparse") is True  # items that never expire cost nothing
