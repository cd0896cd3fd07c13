"""Dates read from the database: the store's codec reads them naive (pymongo makes an aware
date four to five times slower), and every date the store hands out or compares is aware UTC,
whatever codec options the caller's collection has."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from bson.codec_options import CodecOptions
from pymongo import MongoClient

import agent_datastore
from agent_datastore import DataStore, admin
from agent_datastore._store import CODEC_OPTIONS

from .wire import WireServer, start_wire_server

MOMENT = datetime(2026, 11, 26, 10, 0, 0, 123000, tzinfo=timezone.utc)
FAR_EAST = timezone(timedelta(hours=9))


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServer]:
    yield from start_wire_server()


def _stores(wire: WireServer) -> Iterator[tuple[str, DataStore]]:
    """A store from ``connect``, and stores over a caller's collection whose codec options
    read dates naive, or aware in another zone."""
    with wire.connect() as store:
        yield "connect", store
    for name, options in [
        ("naive", CodecOptions()),
        ("aware elsewhere", CodecOptions(tz_aware=True, tzinfo=FAR_EAST)),
    ]:
        client: MongoClient[dict[str, Any]] = MongoClient(wire.uri, serverSelectionTimeoutMS=10_000)
        try:
            collection = client.db.get_collection("items", codec_options=options)
            yield name, DataStore(collection, ensure_indexes=False)
        finally:
            client.close()


def test_the_store_reads_dates_naive() -> None:
    assert CODEC_OPTIONS.tz_aware is False
    assert CODEC_OPTIONS.document_class is dict


def test_item_dates_are_aware_utc_whatever_the_collection(wire: WireServer) -> None:
    expires = MOMENT + timedelta(days=365 * 100)
    document = {
        "key": "k",
        "value": 1,
        "metadata": {},
        "createdAt": MOMENT,
        "updatedAt": MOMENT + timedelta(seconds=1),
        "version": 2,
        "expiresAt": expires,
    }
    for name, store in _stores(wire):
        proxy = store.proxy("user-1", "agent-a")
        wire.take()
        wire.find_batches.append([document])
        item = proxy.get_item("k")
        wire.find_batches.append([{**document, "size": 100}])
        (info,) = proxy.list_items()
        assert item is not None, name
        for found in (item, info):
            dates = [found.createdAt, found.updatedAt, found.expiresAt]
            assert dates == [MOMENT, MOMENT + timedelta(seconds=1), expires], name
            assert all(d is not None and d.tzinfo is timezone.utc for d in dates), name
        wire.take()


def test_expiry_read_from_a_reply_is_compared_in_utc(wire: WireServer) -> None:
    """A document as it was before a write, its expiresAt read naive: an expired one counts
    as absent, a live one as present, in every check the client replays."""
    past, future = datetime(2000, 1, 1, tzinfo=timezone.utc), MOMENT + timedelta(days=36_000)
    with wire.connect() as store:
        store.ensure_indexes()
        proxy = store.proxy("user-1", "agent-a")
        for expires, live in [(past, False), (future, True)]:
            before = {"value": 41, "createdAt": MOMENT, "expiresAt": expires, "version": 7}
            wire.found_and_modified.append(before)
            assert proxy.increment("n") == (42 if live else 1)
            wire.found_and_modified.append(before)
            assert proxy.delete("n") is live
            wire.found_and_modified.append(before)
            if live:
                with pytest.raises(agent_datastore.VersionConflict) as caught:
                    proxy.set("n", 1, if_version=0)
                assert caught.value.current_version == 7
            else:
                proxy.set("n", 1, if_version=0)  # absent: no conflict
        wire.take()


def test_admin_shows_dates_in_utc() -> None:
    with agent_datastore.connect("mongomock://") as store:
        store.proxy("user-1", "agent-a").set("k", 1, ttl=3600)
        before = store.now()
        found = admin.item(store, "user-1", "agent-a", "k")
        assert found is not None
        assert found["expired"] is False
        assert found["createdAt"].endswith("Z")
        # a document that breaks the schema, shown by doctor with its dates' zone
        store.collection.insert_one({"userId": "u", "createdAt": before.replace(tzinfo=None)})
        (sample,) = admin.doctor(store)["invalid_sample"]
        assert sample["createdAt"] == str(before)
        assert sample["createdAt"].endswith("+00:00")
