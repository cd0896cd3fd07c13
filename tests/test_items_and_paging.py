"""Contract of get_item, paged list_keys, iter_keys and list_items, on every backend of the
``store`` fixture."""

from __future__ import annotations

import dataclasses
from datetime import timedelta, timezone
from typing import Any

import bson
import pytest

from agent_datastore import AgentDataStoreProxy, DataStore, Item, ItemInfo, _core

from .helpers import MovableClock, snapshot

# Keys that share prefixes, sort around a separator, and sort by code point, not locale.
KEYS = ["a", "a:", "a:1", "a:10", "a:2", "a;", "aa", "b", "B", "é", "z\x00", "z"]


def fill(proxy: AgentDataStoreProxy) -> list[str]:
    proxy.set_many({key: {"key": key} for key in KEYS}, metadata={"batch": 1})
    return sorted(KEYS)


# ------------------------------------------------------------------------------- get_item


def test_get_item_of_a_missing_key_is_none(data_store: AgentDataStoreProxy) -> None:
    assert data_store.get_item("nothing") is None


def test_get_item_gives_every_detail_of_a_new_item(data_store: AgentDataStoreProxy) -> None:
    data_store.set("report", {"score": 95}, metadata={"generated_by": "analyzer-v2"})
    item = data_store.get_item("report")
    assert isinstance(item, Item)
    assert item.key == "report"
    assert item.value == {"score": 95}
    assert item.metadata == {"generated_by": "analyzer-v2"}
    assert item.version == 1
    assert item.expiresAt is None
    assert item.createdAt == item.updatedAt
    assert item.createdAt.tzinfo is timezone.utc
    assert item.createdAt.microsecond % 1000 == 0  # MongoDB keeps milliseconds


def test_get_item_follows_updates(data_store: AgentDataStoreProxy, clock: MovableClock) -> None:
    data_store.set("k", 1, metadata={"a": 1})
    first = data_store.get_item("k")
    clock.advance(2)
    data_store.set("k", [2], metadata={"b": 2})
    second = data_store.get_item("k")
    assert first is not None
    assert second is not None
    assert second.value == [2]
    assert second.metadata == {"a": 1, "b": 2}
    assert second.version == 2
    assert second.createdAt == first.createdAt
    assert second.updatedAt - first.updatedAt >= timedelta(seconds=2)


def test_an_item_converts_to_a_plain_dict_with_the_stored_field_names(
    data_store: AgentDataStoreProxy,
) -> None:
    data_store.set("k", {"$x": 2**70}, ttl=60)
    item = data_store.get_item("k")
    assert item is not None
    as_dict = item.to_dict()
    assert list(as_dict) == [
        "key",
        "value",
        "metadata",
        "createdAt",
        "updatedAt",
        "version",
        "expiresAt",
    ]
    assert as_dict["value"] == {"$x": 2**70}
    assert as_dict["expiresAt"] == item.updatedAt + timedelta(seconds=60)
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.version = 7  # type: ignore[misc]


def test_get_item_reads_only_its_own_scope(store: DataStore) -> None:
    store.proxy("u", "a", "ns").set("k", 1)
    for other in [("u", "a", "other"), ("u", "b", "ns"), ("v", "a", "ns")]:
        assert store.proxy(*other).get_item("k") is None


# ------------------------------------------------------------------------------- list_keys


def test_list_keys_without_paging_arguments_is_unchanged(data_store: AgentDataStoreProxy) -> None:
    expected = fill(data_store)
    assert data_store.list_keys() == expected
    assert data_store.list_keys(prefix="a:") == ["a:", "a:1", "a:10", "a:2"]


@pytest.mark.parametrize("limit", [1, 2, 3, 5, len(KEYS), len(KEYS) + 1])
@pytest.mark.parametrize("prefix", [None, "a", "a:", "z"])
def test_paging_gives_every_key_once_in_order(
    data_store: AgentDataStoreProxy, limit: int, prefix: str | None
) -> None:
    fill(data_store)
    expected = data_store.list_keys(prefix=prefix)
    seen: list[str] = []
    pages = 0
    start_after = None
    while True:
        page = data_store.list_keys(prefix=prefix, limit=limit, start_after=start_after)
        assert len(page) <= limit
        pages += 1
        seen += page
        if len(page) < limit:
            break
        start_after = page[-1]
    assert seen == expected
    # a full last page is followed by one empty page, as with any cursor API
    assert pages == len(expected) // limit + 1


def test_start_after_need_not_be_a_stored_key(data_store: AgentDataStoreProxy) -> None:
    fill(data_store)
    assert data_store.list_keys(start_after="a:10x") == ["a:2", "a;", "aa", "b", "z", "z\x00", "é"]
    assert data_store.list_keys(prefix="a:", start_after="a:1") == ["a:10", "a:2"]
    assert data_store.list_keys(start_after="\U0010ffff") == []
    assert data_store.list_keys(start_after="") == data_store.list_keys()


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"limit": 0}, ValueError),
        ({"limit": -1}, ValueError),
        ({"limit": 2**63}, ValueError),
        ({"limit": True}, TypeError),
        ({"limit": 1.5}, TypeError),
        ({"limit": "10"}, TypeError),
        ({"start_after": 5}, TypeError),
        ({"start_after": b"a"}, TypeError),
        ({"start_after": "\udc00"}, ValueError),
        ({"start_after": "x" * 1025}, ValueError),
    ],
)
@pytest.mark.parametrize("method", ["list_keys", "list_items"])
def test_bad_paging_arguments_are_refused(
    data_store: AgentDataStoreProxy, arguments: dict[str, Any], error: type, method: str
) -> None:
    with pytest.raises(error):
        getattr(data_store, method)(**arguments)


# ------------------------------------------------------------------------------- iter_keys


def test_iter_keys_streams_every_key_in_order(data_store: AgentDataStoreProxy) -> None:
    expected = fill(data_store)
    assert list(data_store.iter_keys()) == expected
    assert list(data_store.iter_keys(prefix="a:")) == ["a:", "a:1", "a:10", "a:2"]
    assert list(data_store.iter_keys(prefix="nothing")) == []


@pytest.mark.parametrize("page_size", [1, 2, 3, len(KEYS), len(KEYS) - 1])
def test_iter_keys_crosses_page_boundaries(
    data_store: AgentDataStoreProxy, monkeypatch: pytest.MonkeyPatch, page_size: int
) -> None:
    expected = fill(data_store)
    monkeypatch.setattr(_core, "KEY_PAGE_SIZE", page_size)
    assert list(data_store.iter_keys()) == expected


def test_iter_keys_checks_its_prefix_at_the_call(data_store: AgentDataStoreProxy) -> None:
    with pytest.raises(TypeError):
        data_store.iter_keys(prefix=5)  # type: ignore[arg-type]


def test_iter_keys_sees_keys_written_ahead_of_it_and_never_repeats(
    data_store: AgentDataStoreProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_core, "KEY_PAGE_SIZE", 2)
    data_store.set_many({"b": 1, "d": 1, "f": 1})
    stream = data_store.iter_keys()
    assert [next(stream), next(stream)] == ["b", "d"]
    data_store.set_many({"a": 1, "e": 1})  # "a" is behind the stream, "e" ahead of it
    assert list(stream) == ["e", "f"]


# ------------------------------------------------------------------------------ list_items


def test_list_items_gives_details_and_stored_size_without_values(
    data_store: AgentDataStoreProxy, store: DataStore
) -> None:
    data_store.set("a", "x" * 1000, metadata={"m": 1})
    data_store.set("a", "y" * 1000)
    data_store.set("b", None, ttl=timedelta(hours=1))
    first, second = data_store.list_items()
    assert isinstance(first, ItemInfo)
    assert not hasattr(first, "value")
    assert (first.key, first.metadata, first.version, first.expiresAt) == ("a", {"m": 1}, 2, None)
    assert (second.key, second.version) == ("b", 1)
    assert second.expiresAt == second.updatedAt + timedelta(hours=1)
    stored = {doc["key"]: doc for doc in store.collection.find({})}
    assert first.size == len(bson.encode(stored["a"])) > 1000
    assert second.size == len(bson.encode(stored["b"]))
    assert set(first.to_dict()) == {
        "key",
        "metadata",
        "createdAt",
        "updatedAt",
        "version",
        "expiresAt",
        "size",
    }


def test_list_items_pages_like_list_keys(data_store: AgentDataStoreProxy) -> None:
    fill(data_store)
    for arguments in [{}, {"prefix": "a:"}, {"limit": 3}, {"limit": 2, "start_after": "a:1"}]:
        items = data_store.list_items(**arguments)
        assert [item.key for item in items] == data_store.list_keys(**arguments)
        assert all(item.metadata == {"batch": 1} for item in items)


def test_reads_change_nothing(data_store: AgentDataStoreProxy, store: DataStore) -> None:
    fill(data_store)
    before = snapshot(store)
    data_store.get_item("a")
    data_store.list_items(limit=3)
    list(data_store.iter_keys())
    data_store.list_keys(limit=2, start_after="a")
    assert snapshot(store) == before
