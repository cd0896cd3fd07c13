"""The embedded store's wrapper of mongomock-ng (``_embedded``): document sizes computed
without encoding long values, and sized projections computed lazily, outside the lock.

The store service reads with projections that carry each document's ``$bsonSize`` and stops
once its answer is full: a ``get_many`` of 40 values of 15 MiB reads about four of them. The
wrapper used to encode all 40, under the collection's lock and, for ``AsyncDataStore``, on the
event loop (``docs/remote.md``, "Hostile tenants")."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import bson
import pytest
from bson.tz_util import utc
from hypothesis import given
from hypothesis import strategies as st

from agent_datastore import _embedded
from agent_datastore import _operations as ops

# BSON-encodable leaves: text of any length and script, binaries, numbers within int64, dates
_LEAVES = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.datetimes(timezones=st.just(utc)),
)
_NAMES = st.text(max_size=8).filter(lambda name: "\0" not in name and not name.startswith("$"))
_DOCUMENTS = st.dictionaries(
    _NAMES,
    st.recursive(
        _LEAVES,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(_NAMES, children, max_size=4)
        ),
        max_leaves=20,
    ),
    max_size=6,
)


@given(_DOCUMENTS)
def test_bson_size_is_the_encoded_length(document: dict[str, Any]) -> None:
    # with a threshold of 2, nearly every string and binary is measured rather than encoded
    original = _embedded.LONG_VALUE_BYTES
    _embedded.LONG_VALUE_BYTES = 2
    try:
        assert _embedded.bson_size(document) == len(bson.encode(document))
    finally:
        _embedded.LONG_VALUE_BYTES = original


def test_bson_size_of_long_values_in_any_script() -> None:
    long = _embedded.LONG_VALUE_BYTES + 1
    document = {
        "ascii": "x" * long,
        "accents": "é" * long,
        "wide": "日本" * long,
        "emoji": "🙂" * long,
        "binary": b"\0" * long,
        "nested": {"list": ["y" * long, {"deeper": b"z" * long}], "tuple": ("w" * long,)},
        "when": datetime.datetime(2026, 1, 2, tzinfo=utc),
    }
    assert _embedded.bson_size(document) == len(bson.encode(document))


def test_bson_size_of_a_document_of_very_many_values() -> None:
    document = {"value": list(range(3 * _embedded._MAX_VALUES_WALKED))}
    assert _embedded.bson_size(document) == len(bson.encode(document))


def _collection_of(count: int) -> _embedded.LockedCollection:
    collection = _embedded.new_client().db.items
    for index in range(count):
        collection.insert_one({"key": f"k{index:02d}", "value": "v" * 100})
    return _embedded.LockedCollection(collection)


def _counting_sizes(
    monkeypatch: pytest.MonkeyPatch, collection: _embedded.LockedCollection
) -> list[bool]:
    """Every document size computed from now on, as whether the lock was held then."""
    locked_at_each: list[bool] = []
    size = _embedded.bson_size

    def counted(document: Any) -> int:
        locked_at_each.append(collection._lock.locked())
        return size(document)

    monkeypatch.setattr(_embedded, "bson_size", counted)
    return locked_at_each


def test_a_sized_find_measures_only_what_the_reader_reaches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collection = _collection_of(10)
    sizes = _counting_sizes(monkeypatch, collection)
    documents = collection.find({}, ops._SIZED_KEY_AND_VALUE, sort=[("key", 1)])
    first = next(iter(documents))
    assert first["key"] == "k00"
    assert first[ops.ANSWER_SIZE] > 100
    assert sizes == [False]  # one document measured, without the lock
    # a reader that stops once its budget is spent leaves the rest unmeasured
    read, complete = ops.take_within(documents, max_bytes=1)
    assert [document["key"] for document in read] == ["k01"]
    assert complete is False
    assert sizes == [False, False, False]  # k01, and k02 that did not fit


def test_a_find_that_computes_nothing_still_answers_every_document() -> None:
    collection = _collection_of(3)
    found = list(collection.find({}, {"key": 1, "_id": 0}, sort=[("key", 1)]))
    assert found == [{"key": "k00"}, {"key": "k01"}, {"key": "k02"}]


def test_a_sized_find_one_measures_without_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    collection = _collection_of(2)
    sizes = _counting_sizes(monkeypatch, collection)
    document = collection.find_one({"key": "k01"}, ops._SIZED_VALUE)
    assert document is not None
    assert document["value"] == "v" * 100
    assert sizes == [False]


def test_the_async_wrapper_reads_as_far_as_its_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    collection = _collection_of(5)
    sizes = _counting_sizes(monkeypatch, collection)
    wrapper = _embedded.AsyncLockedCollection(collection)

    async def read() -> tuple[list[Any], list[Any]]:
        first_two = await wrapper.find({}, ops._SIZED_KEY_AND_VALUE, sort=[("key", 1)]).to_list(2)
        every = [
            document
            async for document in wrapper.find({}, ops._SIZED_KEY_AND_VALUE, sort=[("key", 1)])
        ]
        return first_two, every

    first_two, every = asyncio.run(read())
    assert [document["key"] for document in first_two] == ["k00", "k01"]
    assert [document["key"] for document in every] == [f"k{index:02d}" for index in range(5)]
    assert sizes == [False] * (2 + 5)
